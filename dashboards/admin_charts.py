"""The admin page's charts: Altair specifications built from analytics frames, nothing drawn.

Every function here takes a frame of :mod:`deepfakenet.analytics` and returns an Altair chart;
none imports Streamlit, so a chart can be built and checked (``chart.to_dict()``) in a plain
test. The sections in :mod:`admin_sections` decide where each chart goes.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from deepfakenet import analytics
from deepfakenet.labels import LABELS

KIND_COLOURS = alt.Scale(domain=["predictions", "feedback"], range=["#4c78a8", "#f58518"])
#: Same colour for the same label in both projections; grey for "no label".
PREDICTED_COLOURS = alt.Scale(domain=[*LABELS, "unknown"], range=["#1f77b4", "#d62728", "#7f7f7f"])
HUMAN_COLOURS = alt.Scale(
    domain=[*LABELS, analytics.NO_FEEDBACK], range=["#1f77b4", "#d62728", "#c7c7c7"]
)
#: Credential states, strongest first, with their colours (green trusted, blue valid, red
#: invalid, grey unknown): the legend reads like :data:`deepfakenet.display.STATE_WORDS`.
STATE_SERIES: dict[str, str] = {
    "trusted": "trusted signature",
    "valid": "valid, signer not trusted",
    "invalid": "invalid",
    "unknown_state": "not validated",
}
STATE_COLOURS = alt.Scale(
    domain=list(STATE_SERIES.values()), range=["#2ca02c", "#4c78a8", "#d62728", "#9d9d9d"]
)


def activity_chart(frame: pd.DataFrame, freq: str) -> alt.Chart:
    """Predictions and feedback per period (:func:`deepfakenet.analytics.activity`)."""
    return (
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


def confusion_chart(matrix: pd.DataFrame) -> alt.LayerChart:
    """The confusion matrix as a heat map with its counts written in the cells."""
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
    return (heat + text).properties(height=220)


def error_rate_chart(table: pd.DataFrame, dimension_title: str) -> alt.Chart:
    """Error rate per group (:func:`deepfakenet.analytics.error_rates`), groups in table order."""
    return (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("group:N", sort=list(table["group"]), title=dimension_title),
            y=alt.Y(
                "error_rate:Q",
                title="error rate",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            tooltip=["group:N", "judged:Q", "errors:Q", alt.Tooltip("error_rate:Q", format=".1%")],
        )
    )


def calibration_chart(bins: pd.DataFrame) -> alt.LayerChart:
    """Reliability diagram: people's share of fake against the model's mean P(fake) per bin."""
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
    return (diagonal + line + points).properties(height=320)


def projection_chart(points: pd.DataFrame, field: str, title: str, colours: alt.Scale) -> alt.Chart:
    """The PCA scatter (:func:`deepfakenet.analytics.pca_projection`) coloured by ``field``."""
    return (
        alt.Chart(points)
        .mark_circle(size=40, opacity=0.7)
        .encode(
            x=alt.X("pc1:Q", title="PC 1"),
            y=alt.Y("pc2:Q", title="PC 2"),
            color=alt.Color(f"{field}:N", title=title, scale=colours),
            tooltip=["prediction_id:N", "model_label:N", "human_label:N"],
        )
        .properties(title=f"Coloured by {title}", height=360)
    )


def provenance_chart(by_day: pd.DataFrame) -> alt.LayerChart:
    """Uploads with credentials per UTC day, stacked by validation state, disagreements marked.

    Args:
        by_day: :func:`deepfakenet.analytics.provenance_table` by ``day``.
    """
    states = by_day.melt(
        id_vars="day", value_vars=list(STATE_SERIES), var_name="state", value_name="count"
    )
    states["state"] = states["state"].map(STATE_SERIES)
    bars = (
        alt.Chart(states)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):T", title="day (UTC)"),
            y=alt.Y("count:Q", title="uploads with credentials", stack=True),
            color=alt.Color("state:N", title="signature", scale=STATE_COLOURS),
            tooltip=[alt.Tooltip("yearmonthdate(day):T", title="day"), "state:N", "count:Q"],
        )
    )
    conflicts = (
        alt.Chart(by_day[by_day["disagreements"] > 0])
        .mark_point(shape="triangle-up", size=90, filled=True, color="#ff7f0e")
        .encode(
            x="yearmonthdate(day):T",
            y=alt.Y("disagreements:Q"),
            tooltip=[alt.Tooltip("yearmonthdate(day):T", title="day"), "disagreements:Q"],
        )
    )
    return (bars + conflicts).properties(height=260)
