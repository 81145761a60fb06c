"""The admin page's reads: the store, the feature store and the registry, cached.

Caching wraps library calls only (:mod:`deepfakenet.monitoring`, :class:`deepfakenet.store.Store`),
so every section receives plain frames and can be rendered, and tested, from frames made by hand.
Reads are reused for :data:`CACHE_TTL_S` seconds across reruns; the sidebar's "Reload data" calls
:func:`drop_cached_reads`. Importing this module only defines the cached functions.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from deepfakenet.monitoring import (
    FeatureSet,
    RegistryView,
    load_features,
    open_store,
    read_registry,
)
from deepfakenet.store import Store

#: How long read results are reused across reruns; "Reload data" drops them at once.
CACHE_TTL_S = 60


@st.cache_resource
def store_for(url: str) -> Store:
    """One connection pool per store URL for the whole dashboard process."""
    return open_store(url)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def predictions_between(url: str, since: datetime, until: datetime) -> pd.DataFrame:
    """Predictions scored in ``[since, until)``."""
    return store_for(url).predictions_frame(since, until)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def feedback_between(url: str, since: datetime, until: datetime) -> pd.DataFrame:
    """Feedback given in ``[since, until)``, joined with its prediction."""
    return store_for(url).feedback_frame(since, until)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Reading feature vectors…")
def features_between(root: str, since: datetime, until: datetime, version: str) -> FeatureSet:
    """One model version's feature vectors scored in ``[since, until)``."""
    return load_features(root, since, until, [version])


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Reading the model registry…")
def registry_view(tracking_uri: str, model_name: str, experiment_name: str) -> RegistryView:
    """Versions, champion and retraining history from MLflow."""
    return read_registry(tracking_uri, model_name, experiment_name)


def drop_cached_reads() -> None:
    """Forget cached reads so the next run sees the stores as they are now."""
    for reader in (predictions_between, feedback_between, features_between, registry_view):
        reader.clear()
