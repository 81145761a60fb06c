"""Scoring a split: index rows -> calibrated scores -> metric cells and tables.

What both the evaluation job (:func:`deepfakenet.pipeline.evaluate`) and the generalisation
protocol (:mod:`deepfakenet.protocol`) need, kept below both so that neither imports the other's
jobs: ``pipeline`` imports this module, ``protocol`` imports this module and ``pipeline``.

Every score goes through :class:`DeepfakeNet`'s ``prob_from_logits`` / ``decide``, the calibrated
probability and the stored threshold, as in the service; every metric through
:func:`deepfakenet.metrics.defined_metrics`, so the ECE in a table is the ECE of training.

Beyond one number per condition, :func:`group_rates` breaks the decisions at the stored threshold
down by the index's ``group`` column: the false-positive rate of each real source and the recall
of each fake family. An overall FPR of 5 % can hide one camera source flagged at 30 %, and an
overall recall one generator family the model never catches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from deepfakenet.data.datamodule import ImageDataset
from deepfakenet.inference import predict_loader
from deepfakenet.labels import FAKE_TARGET, LABELS, REAL_TARGET
from deepfakenet.metrics import defined_metrics
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.perturbations import Identity, PerturbedTransform
from deepfakenet.preprocessing import build_transform

log = logging.getLogger(__name__)

#: Condition name of the unperturbed centre crop.
NATIVE = "native"
#: Condition name of the whole image scored instead of the centre crop.
FULL_IMAGE = "full_image"
#: The metric columns of a cell (see :func:`cell_metrics`).
METRIC_COLUMNS = ("auroc", "ap", "acc", "ece", "fpr", "tpr")
#: The columns of :func:`group_rates`: FPR is filled for real sources, TPR for fake families.
GROUP_COLUMNS = ("label", "group", "n", "flagged", "fpr", "tpr")

Perturbation = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class ProtocolSettings:
    """The non-recipe settings of ``conf/protocol`` (the recipe is the rest of the config).

    Lives here rather than in :mod:`deepfakenet.protocol` because the evaluation job reads the
    perturbations and loader settings from the same node.

    Attributes:
        families: Families held out in turn (``None``: every family in the data).
        sources: Real sources held out in turn (``None``: every source in the data).
        in_distribution: Also train on everything and score the perturbations.
        perturbations: Condition name -> perturbation (instantiated ``_target_`` entries).
        source_conditions: Names of ``perturbations`` also applied to a held-out source.
        full_image: Add a whole-image cell to the in-distribution rows.
        batch_size: Scoring batch size.
        num_workers: Scoring loader workers.
        goals: Goal name -> target value, checked by
            :func:`deepfakenet.protocol.goal_summary`.
    """

    families: Sequence[str] | None
    sources: Sequence[str] | None
    in_distribution: bool
    perturbations: dict[str, Perturbation]
    source_conditions: Sequence[str]
    full_image: bool
    batch_size: int
    num_workers: int
    goals: dict[str, float]

    @classmethod
    def from_config(cls, protocol: DictConfig) -> ProtocolSettings:
        """Build from the ``protocol`` node, instantiating the perturbations."""
        perturbations = {
            str(name): hydra.utils.instantiate(conf)
            for name, conf in (protocol.get("perturbations") or {}).items()
        }
        unknown = [c for c in protocol.get("source_conditions") or [] if c not in perturbations]
        if unknown:
            raise ValueError(f"source_conditions {unknown} are not in protocol.perturbations")

        def names(key: str) -> list[str] | None:
            value = protocol.get(key)
            return None if value is None else [str(v) for v in value]

        return cls(
            families=names("families"),
            sources=names("sources"),
            in_distribution=bool(protocol.get("in_distribution", True)),
            perturbations=perturbations,
            source_conditions=[str(c) for c in protocol.get("source_conditions") or []],
            full_image=bool(protocol.get("full_image", True)),
            batch_size=int(protocol.get("batch_size", 64)),
            num_workers=int(protocol.get("num_workers", 0)),
            goals={str(k): float(v) for k, v in (protocol.get("goals") or {}).items()},
        )


def score_rows(
    net: DeepfakeNet,
    rows: pd.DataFrame,
    perturbation: Perturbation | None = None,
    full_image: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated ``P(fake)`` and targets for index rows, optionally after a perturbation.

    Images go through the one evaluation transform (native-resolution centre crop at the net's
    crop size, or the whole image with ``full_image``), after ``perturbation`` when given.

    Returns:
        ``(prob_fake N, targets N)`` on the CPU, in the order of ``rows``.
    """
    transform = build_transform(net.crop_size, train=False, center_crop=not full_image)
    dataset = ImageDataset(rows, PerturbedTransform(perturbation or Identity(), transform))
    loader = DataLoader(
        dataset,
        batch_size=1 if full_image else batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    logits, targets = predict_loader(net, loader)
    return net.prob_from_logits(logits), targets


def cell_metrics(
    net: DeepfakeNet, prob_fake: torch.Tensor, targets: torch.Tensor
) -> dict[str, Any]:
    """One table cell: counts, ranking metrics, and decisions at the net's stored threshold.

    AUROC and AP need both classes and are NaN otherwise; FPR is over the reals, TPR over fakes.
    """
    targets = targets.long()
    reals, fakes = targets == REAL_TARGET, targets == FAKE_TARGET
    n_real, n_fake = int(reals.sum()), int(fakes.sum())
    cell: dict[str, Any] = {"n_real": n_real, "n_fake": n_fake}
    if not len(targets):
        return cell | dict.fromkeys(METRIC_COLUMNS, math.nan)
    metrics = defined_metrics(prob_fake, targets, float(net.threshold))
    for key in ("auroc", "ap", "acc", "ece"):  # a table cell reads "undefined" as NaN
        cell[key] = math.nan if metrics[key] is None else metrics[key]
    decisions = net.decide(prob_fake)
    cell["fpr"] = float(decisions[reals].double().mean()) if n_real else math.nan
    cell["tpr"] = float(decisions[fakes].double().mean()) if n_fake else math.nan
    return cell


def group_rates(
    net: DeepfakeNet,
    prob_fake: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[str],
) -> pd.DataFrame:
    """Decisions at the stored threshold per ``(label, group)``: source FPR and family recall.

    The index's ``group`` is the real source for reals and the fake family for fakes, so a real
    group's flagged share is that source's false-positive rate and a fake group's is that
    family's recall (TPR). Read both against ``n``: one image more or less moves a small group's
    rate a lot.

    Args:
        net: The calibrated network (its stored threshold decides).
        prob_fake: Calibrated ``P(fake)``, ``N``.
        targets: ``N`` labels, 0 (real) or 1 (fake).
        groups: ``N`` group names (``""`` for images directly in a class folder).

    Returns:
        One row per group, reals first, columns :data:`GROUP_COLUMNS` (``fpr`` is NaN for fake
        groups and ``tpr`` for real ones).
    """
    if len(groups) != len(targets) or len(prob_fake) != len(targets):
        raise ValueError(
            f"{len(prob_fake)} scores, {len(targets)} targets and {len(groups)} groups differ"
        )
    frame = pd.DataFrame(
        {
            "target": targets.long().cpu().numpy(),
            "group": [str(g) for g in groups],
            "flagged": net.decide(prob_fake).long().cpu().numpy(),
        }
    )
    rows: list[dict[str, Any]] = []
    for (target, group), part in frame.groupby(["target", "group"], sort=True):
        n, flagged = len(part), int(part["flagged"].sum())
        rate = flagged / n
        rows.append(
            {
                "label": LABELS[int(target)],
                "group": group or "(none)",
                "n": n,
                "flagged": flagged,
                "fpr": rate if target == REAL_TARGET else math.nan,
                "tpr": rate if target == FAKE_TARGET else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))


@dataclass(frozen=True)
class RobustnessTables:
    """What :func:`score_conditions` produced.

    Attributes:
        cells: One row per condition: ``condition`` and the cell of :func:`cell_metrics`.
        groups: One row per condition and group: ``condition`` and :data:`GROUP_COLUMNS`.
    """

    cells: pd.DataFrame
    groups: pd.DataFrame


def score_conditions(
    net: DeepfakeNet,
    rows: pd.DataFrame,
    perturbations: dict[str, Perturbation],
    full_image: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
) -> RobustnessTables:
    """Score one model on one set of images natively, under each perturbation, on full images.

    Each condition is scored once and read twice: as a cell over all rows and per group
    (:func:`group_rates`), so a perturbation that flags one real source shows as that source.

    Args:
        net: The calibrated network.
        rows: Index rows to score (typically the test split); a ``group`` column is used when
            present, else every row is in group ``""``.
        perturbations: Condition name -> image perturbation.
        full_image: Add a condition scoring whole images instead of the centre crop.
        batch_size: Loader batch size (the full-image condition uses 1).
        num_workers: Loader workers.

    Returns:
        The cells and the per-group rates.
    """
    conditions: list[tuple[str, Perturbation | None, bool]] = [(NATIVE, None, False)]
    conditions += [(name, fn, False) for name, fn in perturbations.items()]
    if full_image:
        conditions.append((FULL_IMAGE, None, True))
    groups = rows["group"].astype(str).tolist() if "group" in rows else [""] * len(rows)
    cells, group_tables = [], []
    for name, perturbation, whole in conditions:
        prob, targets = score_rows(net, rows, perturbation, whole, batch_size, num_workers)
        cells.append({"condition": name, **cell_metrics(net, prob, targets)})
        by_group = group_rates(net, prob, targets, groups)
        by_group.insert(0, "condition", name)
        group_tables.append(by_group)
        log.info("robustness %s: %s", name, {k: cells[-1][k] for k in ("auroc", "fpr", "tpr")})
    return RobustnessTables(
        cells=pd.DataFrame(cells),
        groups=pd.concat(group_tables, ignore_index=True),
    )


def robustness_table(
    net: DeepfakeNet,
    rows: pd.DataFrame,
    perturbations: dict[str, Perturbation],
    full_image: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
) -> pd.DataFrame:
    """The cells of :func:`score_conditions`: one row per condition.

    Returns:
        One row per condition with ``condition`` and the :data:`METRIC_COLUMNS`.
    """
    return score_conditions(net, rows, perturbations, full_image, batch_size, num_workers).cells


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table (no optional dependency), floats rounded."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"
