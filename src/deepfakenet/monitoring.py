"""Read-only access to what the admin dashboard watches: the store, the features, the registry.

Thin on purpose: each function calls the library module that owns the records
(:mod:`deepfakenet.store`, :mod:`deepfakenet.features`, :mod:`deepfakenet.registry`) and turns
"nothing there yet" into an answer the page can show, instead of an exception. A reader never
creates what it reads: a dashboard started before the service must not leave an empty SQLite
file or MLflow database behind where the real one is expected. No URL leaves this module with
its password: logs and error messages go through :func:`deepfakenet.security.redact`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from deepfakenet import registry
from deepfakenet.errors import RegistryError
from deepfakenet.features import feature_matrix, read_features
from deepfakenet.security import redact
from deepfakenet.store import Store, sqlite_file

log = logging.getLogger(__name__)

#: Tables a store must have before the dashboard can read it.
STORE_TABLES = ("predictions", "feedback")


def day_range_utc(first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC instants ``[first 00:00, last + 1 day 00:00)``: whole days, end exclusive.

    Raises:
        ValueError: ``last`` is before ``first``.
    """
    if last < first:
        raise ValueError(f"the range ends ({last}) before it starts ({first})")
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    return since, until


def store_is_ready(url: str) -> bool:
    """Whether the store at ``url`` exists and has its tables (the service created them)."""
    try:
        path = sqlite_file(url)
        if path is not None and not path.is_file():
            return False
        engine = sa.create_engine(url)
    except (sa.exc.SQLAlchemyError, ValueError) as err:  # a malformed URL quotes itself
        log.warning("cannot use the store URL %s: %s", redact(url), redact(err, url))
        return False
    try:
        inspector = sa.inspect(engine)
        return all(inspector.has_table(name) for name in STORE_TABLES)
    except sa.exc.SQLAlchemyError as err:
        log.warning("cannot inspect the store at %s: %s", redact(url), redact(err, url))
        return False
    finally:
        engine.dispose()


def open_store(url: str) -> Store:
    """The store at ``url`` for reading (tables are not created; see :func:`store_is_ready`)."""
    return Store(url, create=False)


@dataclass(frozen=True)
class FeatureSet:
    """Feature rows and their vectors (same order).

    Attributes:
        rows: Columns of :func:`deepfakenet.features.read_features` without ``features``.
        matrix: The vectors, ``N x 512`` float32.
    """

    rows: pd.DataFrame
    matrix: np.ndarray


def load_features(
    root: str | Path,
    since: datetime,
    until: datetime,
    model_versions: Sequence[str] | None = None,
) -> FeatureSet:
    """Stored feature vectors scored in ``[since, until)``, optionally for some versions only.

    The feature store is partitioned by UTC day, so whole days are read and the rows are then
    trimmed to the exact instants.
    """
    last_day = (until - timedelta(microseconds=1)).date()
    frame = read_features(root, since.date(), last_day, model_versions or None)
    if not frame.empty:
        created = pd.to_datetime(frame["created_at"], utc=True)
        frame = frame[(created >= since) & (created < until)].reset_index(drop=True)
    matrix = feature_matrix(frame)
    return FeatureSet(rows=frame.drop(columns=["features"]), matrix=matrix)


@dataclass(frozen=True)
class RegistryView:
    """What the registry says about the model.

    Attributes:
        versions: :func:`deepfakenet.registry.versions_frame` (newest first).
        champion: The version the champion alias points at, None when there is none.
        retrain_runs: :func:`deepfakenet.registry.retrain_runs_frame` (newest first).
    """

    versions: pd.DataFrame
    champion: int | None
    retrain_runs: pd.DataFrame


def read_registry(tracking_uri: str, model_name: str, experiment_name: str) -> RegistryView:
    """Registered versions, the champion and the retraining history, read from MLflow.

    A client is built for ``tracking_uri`` directly, without :func:`registry.use`: a reader
    must not repoint the process-wide MLflow URI of whoever else runs in the same process.

    Raises:
        RegistryError: The registry does not exist or cannot be read. Its message (which the
            admin page shows) never holds the URI's password.
    """
    where = redact(tracking_uri)
    path = sqlite_file(tracking_uri)
    if path is not None and not path.is_file():
        raise RegistryError(
            f"no MLflow registry at {where}: train a model first (`make demo`), or set "
            "DEEPFAKENET_MLFLOW_TRACKING_URI / MLFLOW_TRACKING_URI to the registry the service uses"
        )
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        versions = registry.versions_frame(client, model_name)
        runs = registry.retrain_runs_frame(client, experiment_name)
    except MlflowException as err:
        reason = redact(err, tracking_uri)
        log.warning("cannot read the MLflow registry at %s: %s", where, reason)
        raise RegistryError(f"cannot read the MLflow registry at {where}: {reason}") from None
    champion = None
    for _, row in versions.iterrows():
        if registry.CHAMPION in str(row["aliases"]).split(","):
            champion = int(row["version"])
    return RegistryView(versions=versions, champion=champion, retrain_runs=runs)
