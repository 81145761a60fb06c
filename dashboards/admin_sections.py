"""The admin page's sections: each one a function that draws one block from frames.

A section takes the frames (or settings) it shows and draws a subheader, its numbers and its
charts; it reads nothing itself except where its data is picked inside the section (the PCA's
model version, the registry). So each can be run alone, e.g. under
``AppTest.from_function``, with frames made by hand. Every number comes from
:mod:`deepfakenet.analytics` and every chart from :mod:`admin_charts`; importing this module
draws nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st
from admin_charts import (
    HUMAN_COLOURS,
    PREDICTED_COLOURS,
    activity_chart,
    calibration_chart,
    confusion_chart,
    error_rate_chart,
    projection_chart,
    provenance_chart,
)
from admin_data import features_between, registry_view

from deepfakenet import analytics
from deepfakenet.display import thumbnail_data_uri
from deepfakenet.errors import RegistryError
from deepfakenet.registry import fail_fast_http_calls
from deepfakenet.security import redact
from deepfakenet.settings import DashboardSettings
from deepfakenet.store import ImageArchive


def percent(value: float | None) -> str:
    """A share as ``12.3%``; a dash when there is none (not 0 %, which would be a claim)."""
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
        percent(agree.rate),
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
    st.altair_chart(activity_chart(frame, freq), width="stretch")


def agreement_section(feedback: pd.DataFrame) -> None:
    """The confusion matrix of model label against human label."""
    st.subheader("Model vs people")
    matrix = analytics.confusion_matrix(feedback)
    left, right = st.columns([2, 1])
    left.altair_chart(confusion_chart(matrix), width="stretch")
    right.caption("Latest verdict per prediction; rows: the model, columns: people.")
    right.dataframe(matrix, width="stretch")


#: The error-rate tabs: analytics dimension -> tab title.
ERROR_DIMENSIONS: dict[analytics.ErrorDimension, str] = {
    "confidence": "By confidence",
    "format": "By image format",
    "size": "By image size (shorter side)",
    "model_version": "By model version",
}


def errors_section(feedback: pd.DataFrame) -> None:
    """Error rates by confidence, image format, image size and model version."""
    st.subheader("Error patterns")
    st.caption(
        "Share of judged predictions that people corrected. People send feedback mostly when "
        "they doubt a verdict, so these rates overstate the errors on all traffic; watch them "
        "for change."
    )
    tabs = st.tabs(list(ERROR_DIMENSIONS.values()))
    for tab, (dimension, title) in zip(tabs, ERROR_DIMENSIONS.items(), strict=True):
        with tab:
            table = analytics.error_rates(feedback, dimension)
            st.altair_chart(error_rate_chart(table, title.removeprefix("By ")), width="stretch")
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
    st.metric("Expected calibration error (on judged images)", percent(result.ece))
    bins = result.bins[result.bins["judged"] > 0]
    if bins.empty:
        st.info("No judged predictions in this range.")
        return
    st.altair_chart(calibration_chart(bins), width="stretch")


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
        column.altair_chart(
            projection_chart(projection.points, field, title, colours), width="stretch"
        )


def provenance_section(predictions: pd.DataFrame, limit: int = 20) -> None:
    """C2PA content credentials of the uploads: declared AI, disagreements, signature states.

    The verdicts stay the model's; this shows how often an upload's own signed declaration
    contradicts one (a lead for a closer look, either at the model or at the signer).
    """
    st.subheader("Provenance (C2PA content credentials)")
    counts = analytics.provenance_counts(predictions)
    cols = st.columns(4)
    cols[0].metric(
        "With credentials",
        counts.with_manifest,
        border=True,
        help="Uploads carrying a C2PA manifest, whatever its validation state.",
    )
    cols[1].metric(
        "Declared AI",
        counts.ai_declared,
        border=True,
        help="Uploads whose manifest declares generative-AI content (trainedAlgorithmicMedia "
        "or a composite with it), signature valid or not.",
    )
    cols[2].metric(
        "Disagreements",
        counts.disagreements,
        border=True,
        help="The declaration contradicts the model: AI declared with a valid or trusted "
        "signature but judged real, or a trusted capture claim but judged fake.",
    )
    cols[3].metric(
        "Trusted signatures",
        counts.trusted,
        border=True,
        help="Signed by one of the service's trust anchors. A valid signature by any other "
        "signer is counted apart, as not trusted.",
    )
    st.caption(
        f"Of {counts.uploads} uploads: {counts.with_manifest} with credentials, "
        f"{counts.trusted} trusted, {counts.valid} valid with a signer not trusted, "
        f"{counts.invalid} invalid, {counts.unknown_state} not validated; "
        f"{counts.capture_declared} declare a camera capture."
    )
    if counts.with_manifest == 0:
        st.info("No upload in this range carried content credentials.")
        return
    left, right = st.columns([3, 2])
    left.altair_chart(
        provenance_chart(analytics.provenance_table(predictions, "day")), width="stretch"
    )
    right.caption("Per model version")
    right.dataframe(
        analytics.provenance_table(predictions, "model_version"), hide_index=True, width="stretch"
    )
    conflicts = analytics.provenance_disagreements(predictions, limit)
    if conflicts.empty:
        return
    st.markdown("**Latest disagreements**")
    shown = conflicts.assign(
        created_at=conflicts["created_at"].dt.tz_convert(UTC).dt.strftime("%Y-%m-%d %H:%M"),
        model_version=conflicts["model_version"].astype(str),
        validation_state=conflicts["validation_state"].replace({"Valid": "Valid (not trusted)"}),
    ).rename(columns={"created_at": "when (UTC)", "label": "model said", "prob_fake": "P(fake)"})
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={"P(fake)": st.column_config.NumberColumn(format="%.3f")},
    )


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
