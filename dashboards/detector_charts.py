"""The detector page's charts: Altair specifications built from the service's answers.

No Streamlit here, so a chart can be built and checked (``chart.to_dict()``) in a plain test.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from deepfakenet.service_client import VideoVerdict

#: Colours of the timeline: the frames' line, the clip's threshold, the strongest frame.
LINE_COLOUR, THRESHOLD_COLOUR, STRONGEST_COLOUR = "#4c78a8", "#7f7f7f", "#d62728"


def timeline_frame(verdict: VideoVerdict) -> pd.DataFrame:
    """The clip's timeline as rows: ``t`` (s), ``prob_fake``, ``strongest`` (one row True)."""
    frame = pd.DataFrame(
        {
            "t": [point.t for point in verdict.frames],
            "prob_fake": [point.prob_fake for point in verdict.frames],
        },
        dtype=float,
    )
    frame["strongest"] = frame.index == verdict.strongest.index
    return frame


def timeline_chart(verdict: VideoVerdict, height: int = 260) -> alt.LayerChart:
    """P(fake) of each sampled frame over time, the threshold as a rule, the strongest marked.

    The y axis is fixed to ``[0, 1]`` so clips can be compared by eye; the threshold is the
    clip's (its score, a quantile of these points, is judged against it), drawn dashed.
    """
    frame = timeline_frame(verdict)
    line = (
        alt.Chart(frame)
        .mark_line(point=True, color=LINE_COLOUR)
        .encode(
            x=alt.X("t:Q", title="time (s)"),
            y=alt.Y("prob_fake:Q", title="P(fake)", scale=alt.Scale(domain=[0, 1])),
            tooltip=[
                alt.Tooltip("t:Q", title="time (s)", format=".2f"),
                alt.Tooltip("prob_fake:Q", title="P(fake)", format=".1%"),
            ],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"threshold": [verdict.threshold]}))
        .mark_rule(color=THRESHOLD_COLOUR, strokeDash=[6, 4])
        .encode(
            y="threshold:Q",
            tooltip=[alt.Tooltip("threshold:Q", title="threshold", format=".1%")],
        )
    )
    strongest = (
        alt.Chart(frame[frame["strongest"]])
        .mark_point(shape="diamond", size=160, filled=True, color=STRONGEST_COLOUR)
        .encode(
            x="t:Q",
            y="prob_fake:Q",
            tooltip=[
                alt.Tooltip("t:Q", title="strongest frame at (s)", format=".2f"),
                alt.Tooltip("prob_fake:Q", title="P(fake)", format=".1%"),
            ],
        )
    )
    return (line + rule + strongest).properties(height=height)
