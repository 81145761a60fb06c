"""Admin page: how the detector is doing according to the people who use it.

Reads the prediction + feedback store and the feature store (the service's settings, so the same
``DEEPFAKENET_*`` variables) and the MLflow registry, through the library. Every number comes
from :mod:`deepfakenet.analytics`; this file only lays them out. Nothing is shown before the
admin password (``DEEPFAKENET_ADMIN_PASSWORD``) is entered, and nothing at all when none is set.
Wrong passwords are throttled (:class:`deepfakenet.security.LoginThrottle`), and no URL is shown
with its password (:func:`deepfakenet.security.redact`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from deepfakenet import analytics
from deepfakenet.display import thumbnail_data_uri
from deepfakenet.errors import RegistryError
from deepfakenet.labels import LABELS
from deepfakenet.monitoring import (
    FeatureSet,
    RegistryView,
    day_range_utc,
    load_features,
    open_store,
    read_registry,
    store_is_ready,
)
from deepfakenet.registry import fail_fast_http_calls
from deepfakenet.security import LoginThrottle, redact
from deepfakenet.settings import DashboardSettings, ServiceSettings
from deepfakenet.store import ImageArchive, Store

log = logging.getLogger("deepfakenet.dashboards.admin")

SESSION_KEY = "admin.signed_in"
#: This browser session's id for the login throttle (random; never shown or logged in full).
THROTTLE_KEY = "admin.throttle_id"
#: How long read results are reused across reruns; "Reload data" drops them at once.
CACHE_TTL_S = 60
#: Default date range: the last 30 days.
DEFAULT_DAYS = 30
KIND_COLOURS = alt.Scale(domain=["predictions", "feedback"], range=["#4c78a8", "#f58518"])
#: Same colour for the same label in both projections; grey for "no label".
PREDICTED_COLOURS = alt.Scale(domain=[*LABELS, "unknown"], range=["#1f77b4", "#d62728", "#7f7f7f"])
HUMAN_COLOURS = alt.Scale(
    domain=[*LABELS, analytics.NO_FEEDBACK], range=["#1f77b4", "#d62728", "#c7c7c7"]
)


# ----------------------------------------------------------------------------- cached reads


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


# ----------------------------------------------------------------------------- access


def _fingerprint(settings: DashboardSettings) -> str:
    """Changes when the configured password changes, which signs every session out."""
    secret = settings.admin_password.get_secret_value() if settings.admin_password else ""
    return hashlib.sha256(b"deepfakenet-admin:" + secret.encode("utf-8")).hexdigest()


@st.cache_resource
def login_throttle(
    free_failures: int,
    global_free_failures: int,
    delay_s: float,
    max_delay_s: float,
    global_max_delay_s: float,
) -> LoginThrottle:
    """The one throttle of this dashboard process (shared by every browser session)."""
    return LoginThrottle(
        delay_s=delay_s,
        max_delay_s=max_delay_s,
        global_max_delay_s=global_max_delay_s,
        free_failures=free_failures,
        global_free_failures=global_free_failures,
    )


def _throttle_for(settings: DashboardSettings) -> tuple[LoginThrottle, str]:
    """The process's throttle and this session's key in it."""
    session = st.session_state.setdefault(THROTTLE_KEY, uuid.uuid4().hex)
    throttle = login_throttle(
        settings.admin_login_free_failures,
        settings.admin_login_global_free_failures,
        settings.admin_login_delay_s,
        settings.admin_login_max_delay_s,
        settings.admin_login_global_max_delay_s,
    )
    return throttle, session


def signed_in(settings: DashboardSettings) -> bool:
    """Show the login prompt until the right password is entered; True once it was.

    After a few wrong passwords the next try must wait (longer after each further failure, per
    session and for all sessions together); a try during the wait is refused unchecked.
    """
    if not settings.admin_enabled:
        st.error(
            "The admin dashboard is closed because no admin password is configured. Set "
            "`DEEPFAKENET_ADMIN_PASSWORD` in the dashboard's environment, e.g. "
            "`DEEPFAKENET_ADMIN_PASSWORD=… make dashboards`, and reload this page.",
            icon="🔒",
        )
        return False
    if st.session_state.get(SESSION_KEY) == _fingerprint(settings):
        return True
    st.title("Admin")
    with st.form("admin.login"):
        password = st.text_input("Admin password", type="password", key="admin.password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        throttle, session = _throttle_for(settings)
        wait = throttle.attempt(session)  # takes the try atomically (parallel sessions)
        if wait > 0:
            log.warning("admin sign-in refused unchecked: throttled for %.0f s more", wait)
            st.error(f"Too many wrong passwords: try again in {math.ceil(wait)} s.")
            return False
        if settings.admin_password_matches(password or ""):
            throttle.succeeded(session)
            st.session_state[SESSION_KEY] = _fingerprint(settings)
            log.info("admin signed in")
            st.rerun()
        wait = throttle.wrong_password(session)
        st.error(
            "Wrong password." if wait <= 0 else f"Wrong password. Try again in {math.ceil(wait)} s."
        )
    return False


# ----------------------------------------------------------------------------- sections


def _percent(value: float | None) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.1%}"


def headline(predictions: pd.DataFrame, feedback: pd.DataFrame) -> None:
    """Counts and agreement."""
    agree = analytics.agreement(feedback)
    cols = st.columns(5)
    cols[0].metric("Predictions", len(predictions), border=True)
    cols[1].metric(
        "Feedback", len(feedback), border=True, help="Every feedback row, repeats included."
    )
    cols[2].metric(
        "Images judged",
        agree.judged,
        border=True,
        help="Predictions with feedback; the latest verdict of each counts below.",
    )
    cols[3].metric(
        "Agreement",
        _percent(agree.rate),
        border=True,
        help="Share of judged predictions people confirmed.",
    )
    cols[4].metric("Corrections", agree.disagreed, border=True)


def activity_section(predictions: pd.DataFrame, feedback: pd.DataFrame, days: int) -> None:
    """Predictions and feedback over time (hourly for short ranges, daily otherwise)."""
    st.subheader("Predictions and feedback over time")
    freq = "h" if days <= 3 else "D"
    frame = analytics.activity(predictions, feedback, freq=freq)
    if frame.empty:
        st.info("Nothing was scored in this range.")
        return
    chart = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "yearmonthdatehours(period):T" if freq == "h" else "yearmonthdate(period):T",
                title="hour (UTC)" if freq == "h" else "day (UTC)",
            ),
            y=alt.Y("count:Q", title="count"),
            color=alt.Color("kind:N", title=None, scale=KIND_COLOURS),
            tooltip=["period:T", "kind:N", "count:Q"],
        )
    )
    st.altair_chart(chart, width="stretch")


def agreement_section(feedback: pd.DataFrame) -> None:
    """The confusion matrix of model label against human label."""
    st.subheader("Model vs people")
    matrix = analytics.confusion_matrix(feedback)
    left, right = st.columns([2, 1])
    cells = matrix.stack().rename("count").reset_index()
    base = alt.Chart(cells).encode(
        x=alt.X("human label:N", sort=list(LABELS)),
        y=alt.Y("model label:N", sort=list(LABELS)),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["model label:N", "human label:N", "count:Q"],
    )
    text = base.mark_text(fontSize=18).encode(text="count:Q")
    left.altair_chart((heat + text).properties(height=220), width="stretch")
    right.caption("Latest verdict per prediction; rows: the model, columns: people.")
    right.dataframe(matrix, width="stretch")


def errors_section(feedback: pd.DataFrame) -> None:
    """Error rates by confidence, image format, image size and model version."""
    st.subheader("Error patterns")
    st.caption(
        "Share of judged predictions that people corrected. People send feedback mostly when "
        "they doubt a verdict, so these rates overstate the errors on all traffic; watch them "
        "for change."
    )
    dimensions = {
        "confidence": "By confidence",
        "format": "By image format",
        "size": "By image size (shorter side)",
        "model_version": "By model version",
    }
    for tab, (dimension, title) in zip(
        st.tabs(list(dimensions.values())), dimensions.items(), strict=True
    ):
        with tab:
            table = analytics.error_rates(feedback, dimension)  # type: ignore[arg-type]
            chart = (
                alt.Chart(table)
                .mark_bar()
                .encode(
                    x=alt.X("group:N", sort=list(table["group"]), title=title.removeprefix("By ")),
                    y=alt.Y(
                        "error_rate:Q",
                        title="error rate",
                        axis=alt.Axis(format="%"),
                        scale=alt.Scale(domain=[0, 1]),
                    ),
                    tooltip=[
                        "group:N",
                        "judged:Q",
                        "errors:Q",
                        alt.Tooltip("error_rate:Q", format=".1%"),
                    ],
                )
            )
            st.altair_chart(chart, width="stretch")
            st.dataframe(
                table,
                hide_index=True,
                width="stretch",
                column_config={
                    "error_rate": st.column_config.NumberColumn("error rate", format="percent")
                },
            )


def calibration_section(feedback: pd.DataFrame) -> None:
    """Reliability of the probability against people's labels."""
    st.subheader("Calibration")
    result = analytics.calibration(feedback)
    st.metric("Expected calibration error (on judged images)", _percent(result.ece))
    bins = result.bins[result.bins["judged"] > 0]
    if bins.empty:
        st.info("No judged predictions in this range.")
        return
    diagonal = (
        alt.Chart(pd.DataFrame({"p": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="grey")
        .encode(x="p:Q", y="p:Q")
    )
    base = alt.Chart(bins).encode(
        x=alt.X(
            "mean_prob_fake:Q", title="model's P(fake), bin mean", scale=alt.Scale(domain=[0, 1])
        ),
        y=alt.Y("frac_fake:Q", title="share people labelled fake", scale=alt.Scale(domain=[0, 1])),
    )
    line = base.mark_line()
    points = base.mark_circle(opacity=0.9).encode(
        size=alt.Size("judged:Q", title="judged"),
        tooltip=[
            "bin:N",
            "judged:Q",
            alt.Tooltip("mean_prob_fake:Q", format=".2f"),
            alt.Tooltip("frac_fake:Q", format=".2f"),
        ],
    )
    st.altair_chart((diagonal + line + points).properties(height=320), width="stretch")


def corrections_section(feedback: pd.DataFrame, image_dir: str, limit: int = 20) -> None:
    """The latest corrections with thumbnails of the archived images and the comments."""
    st.subheader("Latest corrections")
    rows = analytics.corrections(feedback, limit)
    if rows.empty:
        st.info("No corrections in this range.")
        return
    archive = ImageArchive(image_dir)
    table = pd.DataFrame(
        {
            "image": [thumbnail_data_uri(archive.path(sha)) for sha in rows["sha256"]],
            "when (UTC)": rows["created_at"].dt.tz_convert(UTC).dt.strftime("%Y-%m-%d %H:%M"),
            "model said": rows["model_label"],
            "P(fake)": rows["prob_fake"].astype(float),
            "people said": rows["human_label"],
            "comment": rows["comment"].fillna(""),
            "version": rows["model_version"].astype(str),
            "size": [
                f"{w}x{h} {f}"
                for w, h, f in rows[["width", "height", "format"]].itertuples(index=False)
            ],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        row_height=72,
        column_config={
            "image": st.column_config.ImageColumn("image", help="Purged images show no thumbnail"),
            "P(fake)": st.column_config.NumberColumn(format="%.3f"),
        },
    )


def projection_section(
    feature_dir: str,
    since: datetime,
    until: datetime,
    predictions: pd.DataFrame,
    feedback: pd.DataFrame,
) -> None:
    """PCA of one model version's feature vectors, coloured by model and by human label."""
    st.subheader("Feature space (PCA)")
    versions = analytics.sorted_versions(predictions["model_version"])
    if not versions:
        st.info("No predictions in this range.")
        return
    version = st.selectbox(
        "Model version",
        versions[::-1],
        key="admin.pca_version",
        help="Each version has its own network, so its vectors live in their own space.",
    )
    features = features_between(feature_dir, since, until, version)
    projection = analytics.pca_projection(features.rows, features.matrix, predictions, feedback)
    if projection is None:
        st.info("Fewer than three stored feature vectors for this version in this range.")
        return
    first, second = projection.explained_variance
    st.caption(
        f"{len(projection.points)} vectors of version {version}; the two components explain "
        f"{first:.0%} and {second:.0%} of the variance."
    )
    left, right = st.columns(2)
    charts = (
        (left, "model_label", "predicted label", PREDICTED_COLOURS),
        (right, "human_label", "human label", HUMAN_COLOURS),
    )
    for column, field, title, colours in charts:
        chart = (
            alt.Chart(projection.points)
            .mark_circle(size=40, opacity=0.7)
            .encode(
                x=alt.X("pc1:Q", title="PC 1"),
                y=alt.Y("pc2:Q", title="PC 2"),
                color=alt.Color(f"{field}:N", title=title, scale=colours),
                tooltip=["prediction_id:N", "model_label:N", "human_label:N"],
            )
            .properties(title=f"Coloured by {title}", height=360)
        )
        column.altair_chart(chart, width="stretch")


def registry_section(settings: DashboardSettings) -> None:
    """Registered versions, the champion, and the retraining runs with their decisions."""
    st.subheader("Model registry")
    # A tracking server that is down says so at once instead of holding the page for minutes.
    fail_fast_http_calls()
    try:
        view = registry_view(
            settings.mlflow_tracking_uri, settings.model_name, settings.experiment_name
        )
    except RegistryError as err:
        st.warning(f"The registry cannot be shown: {redact(err, settings.mlflow_tracking_uri)}")
        return
    st.metric("Champion", "none" if view.champion is None else f"v{view.champion}")
    if view.versions.empty:
        st.info(f"No version of '{settings.model_name}' is registered.")
    else:
        st.dataframe(view.versions, hide_index=True, width="stretch")
    st.markdown("**Retraining history**")
    if view.retrain_runs.empty:
        st.info("No retraining run has been recorded yet.")
        return
    st.dataframe(view.retrain_runs, hide_index=True, width="stretch")


# ----------------------------------------------------------------------------- page


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
            st.session_state.pop(SESSION_KEY, None)
            st.rerun()
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
    where = redact(url)
    st.caption(
        f"{since:%Y-%m-%d} to {(until - timedelta(days=1)):%Y-%m-%d} (UTC) · "
        f"versions: {', '.join(versions) or 'all'} · store {where}"
    )
    headline(predictions, feedback)
    activity_section(predictions, feedback, days)
    agreement_section(feedback)
    errors_section(feedback)
    calibration_section(feedback)
    corrections_section(feedback, str(stores.image_dir))
    projection_section(str(stores.feature_dir), since, until, predictions, feedback)
    registry_section(settings)


main()
