"""Evaluation figures (ROC, confusion matrix, reliability diagram) from scores and targets."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, never a window (servers, CI)

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, confusion_matrix

from deepfakenet.labels import LABELS
from deepfakenet.metrics import ECE_BINS


def roc_figure(prob_fake: np.ndarray, targets: np.ndarray, title: str = "ROC") -> Figure:
    """ROC curve of P(fake) against the fake class."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    RocCurveDisplay.from_predictions(targets, prob_fake, ax=ax, name="deepfakenet")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def confusion_figure(
    prob_fake: np.ndarray, targets: np.ndarray, threshold: float, title: str = "Confusion matrix"
) -> Figure:
    """Confusion matrix of the decisions at ``threshold``."""
    decisions = (prob_fake >= threshold).astype(int)
    matrix = confusion_matrix(targets, decisions, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ConfusionMatrixDisplay(matrix, display_labels=list(LABELS)).plot(ax=ax, colorbar=False)
    ax.set_title(f"{title} (threshold {threshold:.3f})")
    fig.tight_layout()
    return fig


def reliability_figure(
    prob_fake: np.ndarray, targets: np.ndarray, title: str = "Reliability", bins: int = ECE_BINS
) -> Figure:
    """Reliability diagram: observed fake rate per confidence bin, against the diagonal."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob_fake, edges[1:-1]), 0, bins - 1)
    centres, observed, counts = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            centres.append(float(prob_fake[mask].mean()))
            observed.append(float(targets[mask].mean()))
            counts.append(int(mask.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    ax.scatter(centres, observed, s=[10 + 90 * c / max(counts, default=1) for c in counts])
    ax.plot(centres, observed, marker="", lw=1)
    ax.set(xlabel="predicted P(fake)", ylabel="observed fake rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def evaluation_figures(
    prob_fake: np.ndarray, targets: np.ndarray, threshold: float, prefix: str = ""
) -> dict[str, Figure]:
    """The standard set of figures keyed by file name."""
    return {
        f"{prefix}roc.png": roc_figure(prob_fake, targets),
        f"{prefix}confusion_matrix.png": confusion_figure(prob_fake, targets, threshold),
        f"{prefix}reliability.png": reliability_figure(prob_fake, targets),
    }
