"""What the admin dashboard computes from the store's frames: pure functions, no IO.

Inputs are the frames of :meth:`deepfakenet.store.Store.predictions_frame` and
:meth:`deepfakenet.store.Store.feedback_frame` (and :func:`deepfakenet.features.read_features`);
outputs are small frames ready to chart. Keeping this apart from Streamlit makes every number on
the page testable without a browser, and lets a notebook or a report reuse it.

One verdict per image. A prediction can receive several feedback rows (a person corrects their
own click, or answers twice). Every human-vs-model figure here (agreement, confusion matrix,
error rates, calibration) uses :func:`latest_verdicts`: the most recent feedback per prediction,
so a double click does not count twice and a correction supersedes what it corrects. Activity
over time counts every feedback row, because it measures traffic, not truth.

Selection bias. People mostly send feedback when they doubt a verdict, so error rates and
calibration measured on feedback overstate the errors of the whole traffic. The page says so;
the numbers are still the right ones to watch for *change*.

Provenance. Each prediction record carries the upload's C2PA content credentials as JSON text
(``provenance``; :mod:`deepfakenet.provenance`). Records of earlier releases have none, and a
value that cannot be read is counted the same way, as an upload without credentials: the
counts here must never fail on one odd row, and never claim a declaration that is not there.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from deepfakenet.labels import FAKE_LABEL, LABELS
from deepfakenet.metrics import ECE_BINS, expected_calibration_error
from deepfakenet.store import VIDEO_ENDPOINT

log = logging.getLogger(__name__)

#: Edges of the confidence buckets: the probability the model gave to its own verdict. A
#: verdict can have confidence below 0.5 when the decision threshold is not 0.5.
CONFIDENCE_EDGES: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Edges of the image-size buckets, on the shorter side in pixels: below a typical crop (64),
#: below ImageNet size (224), then larger photographs.
SIZE_EDGES: tuple[float, ...] = (0, 64, 224, 512, 1024, math.inf)
#: Label of images that received no feedback, in projections coloured by the human label.
NO_FEEDBACK = "no feedback"

ErrorDimension = Literal["confidence", "format", "size", "model_version"]
ProvenanceDimension = Literal["model_version", "day"]

#: C2PA validation states (:mod:`deepfakenet.provenance`), strongest first. ``Valid`` is an
#: intact signature by a signer outside the trust anchors; only ``Trusted`` means trusted.
VALIDATION_STATES: tuple[str, ...] = ("Trusted", "Valid", "Invalid")
#: State of a manifest whose validation state is missing or not one of the above.
UNKNOWN_STATE = "unknown"
#: State of a record without (readable) content credentials.
NO_MANIFEST = "no manifest"
#: The counts of :func:`provenance_counts` and :func:`provenance_table`, in display order.
PROVENANCE_COUNTS: tuple[str, ...] = (
    "uploads",
    "with_manifest",
    "trusted",
    "valid",
    "invalid",
    "unknown_state",
    "ai_declared",
    "capture_declared",
    "disagreements",
)


@dataclass(frozen=True)
class Agreement:
    """How often people confirmed the model's verdict.

    Attributes:
        judged: Predictions with at least one human verdict.
        agreed: Of those, how many the latest verdict confirmed.
        rate: ``agreed / judged``; None when nothing was judged (not 0, which would be a claim).
    """

    judged: int
    agreed: int

    @property
    def rate(self) -> float | None:
        """The agreement rate in ``[0, 1]``, or None without any verdict."""
        return self.agreed / self.judged if self.judged else None

    @property
    def disagreed(self) -> int:
        """Predictions people corrected."""
        return self.judged - self.agreed


def filter_versions(frame: pd.DataFrame, model_versions: Sequence[str] | None) -> pd.DataFrame:
    """Rows scored by one of ``model_versions``; all rows when it is empty or None."""
    if not model_versions:
        return frame
    return frame[frame["model_version"].astype(str).isin([str(v) for v in model_versions])]


def latest_verdicts(feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per prediction: its most recent feedback (see the module docstring).

    Args:
        feedback: A feedback frame (columns of ``Store.feedback_frame``).

    Returns:
        The same columns, one row per ``prediction_id``, ordered by feedback time.
    """
    if feedback.empty:
        return feedback.copy()
    ordered = feedback.sort_values("created_at", kind="stable")
    return ordered.drop_duplicates("prediction_id", keep="last").reset_index(drop=True)


def agreement(feedback: pd.DataFrame) -> Agreement:
    """Agreement of the model with people over the latest verdict of each prediction."""
    verdicts = latest_verdicts(feedback)
    agreed = int((verdicts["human_label"] == verdicts["model_label"]).sum()) if len(verdicts) else 0
    return Agreement(judged=len(verdicts), agreed=agreed)


def confusion_matrix(feedback: pd.DataFrame) -> pd.DataFrame:
    """Counts of model label (rows) against human label (columns), both in :data:`LABELS` order.

    Every cell is present, also when zero, so the matrix always has the same shape. Rows are
    named ``model label``, columns ``human label``.
    """
    verdicts = latest_verdicts(feedback)
    matrix = pd.crosstab(
        pd.Categorical(verdicts["model_label"], categories=LABELS),
        pd.Categorical(verdicts["human_label"], categories=LABELS),
        dropna=False,
    )
    matrix = matrix.reindex(index=list(LABELS), columns=list(LABELS), fill_value=0).astype(int)
    matrix.index.name, matrix.columns.name = "model label", "human label"
    return matrix


def activity(predictions: pd.DataFrame, feedback: pd.DataFrame, freq: str = "D") -> pd.DataFrame:
    """Predictions and feedback per period, in long form for a chart.

    Args:
        predictions: A predictions frame (``created_at`` in UTC).
        feedback: A feedback frame (``created_at`` of the feedback, in UTC).
        freq: A pandas period alias: ``"D"`` per day, ``"h"`` per hour.

    Returns:
        Columns ``period`` (UTC timestamp of the period's start), ``kind`` (``predictions`` or
        ``feedback``), ``count``; periods without records are filled with 0 between the first
        and the last record, so a line chart shows gaps as zeros rather than interpolating.
    """
    parts = []
    for kind, frame in (("predictions", predictions), ("feedback", feedback)):
        if frame.empty:
            continue
        periods = frame["created_at"].dt.floor(freq)
        parts.append(periods.value_counts().rename_axis("period").rename(kind))
    if not parts:
        return pd.DataFrame(
            {
                "period": pd.Series(dtype="datetime64[ns, UTC]"),
                "kind": pd.Series(dtype=str),
                "count": pd.Series(dtype=int),
            }
        )
    wide = pd.concat(parts, axis=1).sort_index()
    full = pd.date_range(wide.index.min(), wide.index.max(), freq=freq)
    wide = wide.reindex(full, fill_value=0).fillna(0).astype(int)
    for kind in ("predictions", "feedback"):
        if kind not in wide:
            wide[kind] = 0
    return (
        wide.rename_axis("period")
        .reset_index()
        .melt(
            id_vars="period",
            value_vars=["predictions", "feedback"],
            var_name="kind",
            value_name="count",
        )
    )


def verdict_confidence(frame: pd.DataFrame) -> pd.Series:
    """The probability the model gave to its own verdict: ``prob_fake`` for fake, else ``1 -``."""
    prob = frame["prob_fake"].astype(float)
    return prob.where(frame["model_label"] == "fake", 1.0 - prob)


def _bucket_labels(edges: Sequence[float], percent: bool, unit: str = "") -> list[str]:
    labels = []
    for lo, hi in itertools.pairwise(edges):
        if percent:
            labels.append(f"{lo:.0%}-{hi:.0%}")
        elif math.isinf(hi):
            labels.append(f"≥{lo:g}{unit}")
        elif lo == 0:
            labels.append(f"<{hi:g}{unit}")
        else:
            labels.append(f"{lo:g}-{hi:g}{unit}")
    return labels


def _buckets(values: pd.Series, edges: Sequence[float], labels: list[str]) -> pd.Series:
    """Left-closed buckets; the last one is closed on both sides (a confidence of exactly 1)."""
    bins = list(edges)
    if not math.isinf(bins[-1]):
        bins[-1] = np.nextafter(bins[-1], math.inf)
    return pd.cut(values, bins=bins, labels=labels, right=False, include_lowest=True)


def error_rates(feedback: pd.DataFrame, by: ErrorDimension) -> pd.DataFrame:
    """Share of predictions people corrected, grouped along one dimension.

    Args:
        feedback: A feedback frame; its latest verdict per prediction is used.
        by: ``confidence`` (buckets of :func:`verdict_confidence`), ``format`` (the decoded
            image format), ``size`` (buckets of the shorter side) or ``model_version``.

    Returns:
        Columns ``group`` (str), ``judged``, ``errors``, ``error_rate`` (NaN for
        groups without verdicts). Bucketed dimensions list every bucket in order, empty or not;
        the others list the groups present.
    """
    verdicts = latest_verdicts(feedback)
    wrong = verdicts["human_label"] != verdicts["model_label"]
    if by == "confidence":
        labels = _bucket_labels(CONFIDENCE_EDGES, percent=True)
        groups = _buckets(verdict_confidence(verdicts), CONFIDENCE_EDGES, labels)
    elif by == "size":
        labels = _bucket_labels(SIZE_EDGES, percent=False, unit=" px")
        shorter = np.minimum(verdicts["width"].astype(float), verdicts["height"].astype(float))
        groups = _buckets(pd.Series(shorter, index=verdicts.index), SIZE_EDGES, labels)
    elif by in ("format", "model_version"):
        labels = sorted_versions(verdicts[by])
        groups = pd.Categorical(verdicts[by].astype(str), categories=labels)
    else:
        raise ValueError(f"cannot group errors by {by!r}")
    table = (
        pd.DataFrame({"group": groups, "wrong": wrong.to_numpy()})
        .groupby("group", observed=False)["wrong"]
        .agg(judged="count", errors="sum")
        .reindex(labels, fill_value=0)
        .rename_axis("group")
        .reset_index()
    )
    table["judged"] = table["judged"].astype(int)
    table["errors"] = table["errors"].astype(int)
    table["error_rate"] = table["errors"] / table["judged"].where(table["judged"] > 0)
    table["group"] = table["group"].astype(str)
    return table


def _natural_key(text: str) -> tuple[int, float, str]:
    """Sort ``"2"`` before ``"10"`` (model versions) while keeping other strings alphabetical."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def sorted_versions(values: Iterable[object]) -> list[str]:
    """Distinct model versions as strings, numerically ordered (``"2"`` before ``"10"``)."""
    return sorted({str(v) for v in values}, key=_natural_key)


@dataclass(frozen=True)
class Calibration:
    """Reliability of ``prob_fake`` against people's verdicts.

    Attributes:
        bins: Columns ``bin`` (label), ``lo``, ``hi``, ``judged``, ``mean_prob_fake`` (the
            model's average claim in the bin), ``frac_fake`` (how often people said fake).
        ece: Expected calibration error: the judged-weighted mean gap between claim and
            observation; None without verdicts.
    """

    bins: pd.DataFrame
    ece: float | None


def calibration(feedback: pd.DataFrame, n_bins: int = ECE_BINS) -> Calibration:
    """Bin predictions by ``prob_fake`` and compare each bin's claim with the human labels.

    A calibrated model that says 0.8 is right about "fake" 80 % of the time; the reliability
    chart shows ``frac_fake`` against ``mean_prob_fake`` per bin, ideally on the diagonal.
    Clips (``/predict_video``) are left out: their score is a quantile of frame probabilities.
    Equal-width bins, as the training report's reliability diagram uses, and by default as many
    (:data:`~deepfakenet.metrics.ECE_BINS`): the ECE is
    :func:`~deepfakenet.metrics.expected_calibration_error`, the very number training and the
    evaluation report give, here measured against people's verdicts instead of the data's labels.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    verdicts = latest_verdicts(feedback)
    if "endpoint" in verdicts:  # a clip's score is a quantile of frames, not a probability
        verdicts = verdicts[verdicts["endpoint"] != VIDEO_ENDPOINT]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # One decimal when it names every edge exactly (10 bins), else two (15 bins: 0.07, 0.13).
    digits = 1 if np.allclose(edges, np.round(edges, 1)) else 2
    labels = [f"{lo:.{digits}f}-{hi:.{digits}f}" for lo, hi in itertools.pairwise(edges)]
    prob = verdicts["prob_fake"].astype(float)
    fake = (verdicts["human_label"] == FAKE_LABEL).astype(float)
    frame = pd.DataFrame(
        {
            "bin": _buckets(prob, edges, labels),
            "prob": prob.to_numpy(),
            "fake": fake.to_numpy(),
        }
    )
    bins = (
        frame.groupby("bin", observed=False)
        .agg(judged=("prob", "count"), mean_prob_fake=("prob", "mean"), frac_fake=("fake", "mean"))
        .reindex(labels)
        .rename_axis("bin")
        .reset_index()
    )
    bins["judged"] = bins["judged"].fillna(0).astype(int)
    bins.insert(1, "lo", edges[:-1])
    bins.insert(2, "hi", edges[1:])
    bins["bin"] = bins["bin"].astype(str)
    ece = None
    if len(verdicts):
        ece = expected_calibration_error(
            torch.tensor(prob.to_numpy(dtype=float)),
            torch.tensor(fake.to_numpy(dtype=float)),
            n_bins,
        )
    return Calibration(bins=bins, ece=ece)


def corrections(feedback: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """The newest feedback rows that contradict the model, newest first (at most ``limit``)."""
    wrong = feedback[feedback["human_label"] != feedback["model_label"]]
    return wrong.sort_values("created_at", ascending=False, kind="stable").head(limit)


@dataclass(frozen=True)
class Projection:
    """A 2-D PCA projection of feature vectors, one row per prediction.

    Attributes:
        points: Columns ``prediction_id``, ``model_version``, ``created_at``, ``pc1``, ``pc2``,
            ``model_label`` and ``human_label`` (:data:`NO_FEEDBACK` when none).
        explained_variance: Fraction of the variance each of the two components explains.
    """

    points: pd.DataFrame
    explained_variance: tuple[float, float]


def pca_projection(
    features: pd.DataFrame,
    matrix: np.ndarray,
    predictions: pd.DataFrame,
    feedback: pd.DataFrame,
    max_points: int = 5000,
    seed: int = 0,
) -> Projection | None:
    """Project stored feature vectors to 2-D with PCA and attach model and human labels.

    Vectors of different model versions live in different spaces (each version has its own
    network), so pass one version's rows at a time.

    Args:
        features: Rows of :func:`deepfakenet.features.read_features`.
        matrix: Their vectors, ``N x D`` (:func:`deepfakenet.features.feature_matrix`).
        predictions: A predictions frame (for the model's label of each vector).
        feedback: A feedback frame (for the latest human label).
        max_points: Keep the most recent rows beyond this many (a scatter of more is unreadable
            and slow in a browser).
        seed: Seed of the randomised SVD PCA uses on large inputs.

    Returns:
        The projection, or None with fewer than three vectors (two points always lie on a line).
    """
    from sklearn.decomposition import PCA

    if len(features) != len(matrix):
        raise ValueError(f"{len(features)} feature rows but {len(matrix)} vectors")
    if len(features) > max_points:
        order = np.argsort(features["created_at"].to_numpy(), kind="stable")[-max_points:]
        features, matrix = features.iloc[order], matrix[order]
    if len(features) < 3:
        return None
    pca = PCA(n_components=2, random_state=seed)
    coords = pca.fit_transform(np.asarray(matrix, dtype=np.float64))
    points = features[["prediction_id", "model_version", "created_at"]].reset_index(drop=True)
    points["pc1"], points["pc2"] = coords[:, 0], coords[:, 1]
    model_labels = predictions.set_index("id")["label"] if len(predictions) else pd.Series()
    human = latest_verdicts(feedback)
    human_labels = human.set_index("prediction_id")["human_label"] if len(human) else pd.Series()
    points["model_label"] = points["prediction_id"].map(model_labels).fillna("unknown")
    points["human_label"] = points["prediction_id"].map(human_labels).fillna(NO_FEEDBACK)
    ratio = pca.explained_variance_ratio_
    log.debug("PCA of %s vectors: explained variance %s", matrix.shape, ratio)
    return Projection(points=points, explained_variance=(float(ratio[0]), float(ratio[1])))


# ----------------------------------------------------------------------------- provenance


def parse_provenance(value: object) -> dict[str, Any] | None:
    """The provenance object of one record, or None when there is none or it cannot be read.

    Accepts what a frame's ``provenance`` cell may hold: JSON text (the store), an already
    parsed dict (a service answer), None or NaN (older records). Malformed JSON and JSON that
    is not an object read as None, so one bad row costs its own credentials, not the page.
    """
    if isinstance(value, dict):
        return value
    if not isinstance(value, str | bytes):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        log.debug("unreadable provenance value ignored: %.60r", value)
        return None
    return parsed if isinstance(parsed, dict) else None


def provenance_flags(predictions: pd.DataFrame) -> pd.DataFrame:
    """Each prediction's content-credential facts, one row per row of ``predictions``.

    Returns:
        Columns ``state`` (one of :data:`VALIDATION_STATES`, :data:`UNKNOWN_STATE` or
        :data:`NO_MANIFEST`), ``ai_declared``, ``capture_declared``, ``disagrees`` (bools) on
        the index of ``predictions``. Without a manifest every flag is False, whatever the rest
        of the object says: there is nothing to declare or disagree with. Flags count only when
        they are JSON ``true`` (a string ``"false"`` is not a declaration).
    """
    cells = predictions.get("provenance")
    rows = []
    for value in [None] * len(predictions) if cells is None else cells:
        obj = parse_provenance(value)
        if obj is None or obj.get("manifest_present") is not True:
            rows.append((NO_MANIFEST, False, False, False))
            continue
        state = obj.get("validation_state")
        rows.append(
            (
                state if state in VALIDATION_STATES else UNKNOWN_STATE,
                obj.get("ai_generated_declared") is True,
                obj.get("capture_declared") is True,
                obj.get("disagrees") is True,
            )
        )
    flags = pd.DataFrame(
        rows, columns=["state", "ai_declared", "capture_declared", "disagrees"], dtype=object
    )
    flags.index = predictions.index
    return flags.astype({"ai_declared": bool, "capture_declared": bool, "disagrees": bool})


def _count_flags(flags: pd.DataFrame) -> dict[str, int]:
    """The :data:`PROVENANCE_COUNTS` of a :func:`provenance_flags` frame."""
    states = flags["state"]
    return {
        "uploads": len(flags),
        "with_manifest": int((states != NO_MANIFEST).sum()),
        "trusted": int((states == "Trusted").sum()),
        "valid": int((states == "Valid").sum()),
        "invalid": int((states == "Invalid").sum()),
        "unknown_state": int((states == UNKNOWN_STATE).sum()),
        "ai_declared": int(flags["ai_declared"].sum()),
        "capture_declared": int(flags["capture_declared"].sum()),
        "disagreements": int(flags["disagrees"].sum()),
    }


@dataclass(frozen=True)
class ProvenanceCounts:
    """Content credentials over a set of predictions.

    Attributes:
        uploads: Predictions counted (with credentials or not).
        with_manifest: Of those, how many carried a C2PA manifest.
        trusted: Manifests validated and signed by a trust anchor.
        valid: Manifests validated whose signer is not trusted (never shown as trusted).
        invalid: Manifests that failed validation (tampered, broken, bad signature).
        unknown_state: Manifests without a known validation state.
        ai_declared: Uploads whose manifest declares generative-AI content (any state: an
            invalid signature still says what its maker claimed).
        capture_declared: Uploads whose manifest declares a camera capture.
        disagreements: Uploads whose declaration contradicts the model's verdict (the
            service decides, with the signature's state, and records it).
    """

    uploads: int
    with_manifest: int
    trusted: int
    valid: int
    invalid: int
    unknown_state: int
    ai_declared: int
    capture_declared: int
    disagreements: int


def provenance_counts(predictions: pd.DataFrame) -> ProvenanceCounts:
    """Uploads with credentials, by validation state, AI declarations and disagreements."""
    return ProvenanceCounts(**_count_flags(provenance_flags(predictions)))


def provenance_table(predictions: pd.DataFrame, by: ProvenanceDimension) -> pd.DataFrame:
    """The :data:`PROVENANCE_COUNTS` per model version or per UTC day.

    Args:
        predictions: A predictions frame (``created_at`` in UTC, ``model_version``,
            ``provenance``).
        by: ``model_version`` (numerically ordered) or ``day`` (the UTC timestamp of the day's
            start; days without uploads between the first and the last are listed with zeros).

    Returns:
        One row per group: a column named after ``by``, then the counts.
    """
    flags = provenance_flags(predictions)
    if by == "model_version":
        keys = predictions["model_version"].astype(str)
        groups = sorted_versions(keys)
    elif by == "day":
        keys = predictions["created_at"].dt.floor("D")
        groups = list(pd.date_range(keys.min(), keys.max(), freq="D")) if len(keys) else []
    else:
        raise ValueError(f"cannot group provenance by {by!r}")
    rows = [{by: group, **_count_flags(flags[(keys == group).to_numpy()])} for group in groups]
    table = pd.DataFrame(rows, columns=[by, *PROVENANCE_COUNTS])
    return table.astype(dict.fromkeys(PROVENANCE_COUNTS, int))


def provenance_disagreements(predictions: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """The newest predictions whose credentials contradict the verdict (at most ``limit``).

    Returns:
        Columns ``id``, ``created_at``, ``model_version``, ``label``, ``prob_fake`` and, from
        the credentials, ``validation_state``, ``digital_source_type``, ``signer``,
        ``claim_generator``; newest first.
    """
    details = ["validation_state", "digital_source_type", "signer", "claim_generator"]
    columns = ["id", "created_at", "model_version", "label", "prob_fake", *details]
    flags = provenance_flags(predictions)
    rows = predictions[flags["disagrees"].to_numpy()]
    rows = rows.sort_values("created_at", ascending=False, kind="stable").head(limit)
    table = rows.reindex(columns=columns[:5]).reset_index(drop=True)
    parsed = [parse_provenance(value) or {} for value in rows.get("provenance", [])]
    for name in details:
        # object dtype: a missing signer stays None (a string column would make it NaN)
        values = [_text_or_none(obj.get(name)) for obj in parsed]
        table[name] = pd.Series(values, index=table.index, dtype=object)
    return table[columns]


def _text_or_none(value: object) -> str | None:
    """A credential field as text for a table; None when absent."""
    return None if value is None else str(value)
