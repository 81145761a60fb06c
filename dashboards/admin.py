"""Admin page: how the detector is doing according to the people who use it.

Reads the prediction + feedback store and the feature store (the service's settings, so the same
``DEEPFAKENET_*`` variables) and the MLflow registry, through the library. This file only wires
the page: the gate (:mod:`admin_login`), the sidebar's filters, then the sections
(:mod:`admin_sections`, charts in :mod:`admin_charts`) over the cached reads
(:mod:`admin_data`). Nothing is shown before the admin password (``DEEPFAKENET_ADMIN_PASSWORD``)
is entered, and nothing at all when none is set. No URL is shown with its password
(:func:`deepfakenet.security.redact`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import streamlit as st
from admin_data import CACHE_TTL_S, drop_cached_reads, feedback_between, predictions_between
from admin_login import sign_out, signed_in
from admin_sections import (
    activity_section,
    agreement_section,
    calibration_section,
    corrections_section,
    errors_section,
    headline,
    projection_section,
    provenance_section,
    registry_section,
)

from deepfakenet import analytics
from deepfakenet.monitoring import day_range_utc, store_is_ready
from deepfakenet.security import redact
from deepfakenet.settings import DashboardSettings, ServiceSettings

#: Default date range: the last 30 days.
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Selection:
    """What the sidebar picked, and the store's rows for its date range (all versions)."""

    since: datetime
    until: datetime
    days: int
    versions: list[str]
    predictions: pd.DataFrame
    feedback: pd.DataFrame


def filters(url: str) -> Selection | None:
    """Sidebar filters: a date range (UTC days) and model versions; None until complete."""
    today = datetime.now(UTC).date()
    with st.sidebar:
        st.header("Filters")
        picked = st.date_input(
            "Dates (UTC)",
            value=(today - timedelta(days=DEFAULT_DAYS - 1), today),
            key="admin.dates",
        )
        if st.button("Reload data", help=f"Data is otherwise reused for {CACHE_TTL_S} s."):
            drop_cached_reads()
        if st.button("Sign out"):
            sign_out()
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.info("Pick the last day of the range.")
        return None
    first, last = picked
    if not isinstance(first, date) or not isinstance(last, date):
        return None
    since, until = day_range_utc(first, last)
    predictions = predictions_between(url, since, until)
    feedback = feedback_between(url, since, until)
    options = analytics.sorted_versions([*predictions["model_version"], *feedback["model_version"]])
    versions = st.sidebar.multiselect(
        "Model versions", options, key="admin.versions", placeholder="all versions"
    )
    return Selection(since, until, (last - first).days + 1, versions, predictions, feedback)


def main() -> None:
    """Render the page."""
    settings = DashboardSettings()
    if not signed_in(settings):
        return
    stores = ServiceSettings()
    url = str(stores.store_url)
    st.title("DeepFakeNet admin")
    if not store_is_ready(url):
        st.info(
            f"No prediction store at {redact(url)} yet: it is created when the service "
            "(`make serve`) starts. Score an image, then reload."
        )
        registry_section(settings)
        return
    chosen = filters(url)
    if chosen is None:
        return
    since, until, days, versions = chosen.since, chosen.until, chosen.days, chosen.versions
    predictions = analytics.filter_versions(chosen.predictions, versions)
    feedback = analytics.filter_versions(chosen.feedback, versions)
    st.caption(
        f"{since:%Y-%m-%d} to {(until - timedelta(days=1)):%Y-%m-%d} (UTC) · "
        f"versions: {', '.join(versions) or 'all'} · store {redact(url)}"
    )
    headline(predictions, feedback)
    activity_section(predictions, feedback, days)
    agreement_section(feedback)
    errors_section(feedback)
    calibration_section(feedback)
    corrections_section(feedback, str(stores.image_dir))
    provenance_section(predictions)
    projection_section(str(stores.feature_dir), since, until, predictions, feedback)
    registry_section(settings)


main()
