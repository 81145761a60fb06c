"""The generalisation protocol: scores that say how the detector does on what it has not seen.

A detector scored on its own test split mostly measures how well it memorised the photos and the
one upsampler it was trained on (Wang et al., CNNDetection, 2020). This protocol trains one
model per fold and scores each on data that fold never saw:

- **leave one fake family out**: train on every fake family but one, test on the held-out
  family's fakes against the (unseen) test reals;
- **leave one real source out**: keep one real source, *and every fake made from its photos*,
  out of training and validation; report how many of its reals are flagged (the false-positive
  rate), natively and after the source-side perturbations (e.g. an antialiased 0.5x downscale);
- **perturbations**: the model trained on everything, scored on its test split after JPEG
  re-compression, downscaling, blur, and on the full image instead of the centre crop.

Every cell reports AUROC, AP, accuracy at the model's stored threshold, ECE, and the false- and
true-positive rates at that threshold. All scoring goes through :class:`DeepfakeNet`'s
``prob_from_logits`` / ``decide``: the calibrated probability and the stored threshold, as in
the service. The protocol generates its own (seeded) data tree from ``cfg.synth`` so its figures
do not depend on whatever happens to be in ``data/``.

Layering: the scoring of a split (rows -> scores -> cells, :class:`ProtocolSettings`) lives in
:mod:`deepfakenet.evaluation`, below both this module and :mod:`deepfakenet.pipeline`; this
module keeps the folds and the whole run, and imports both.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from deepfakenet import registry
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.data.fakes import LEARNED_FAMILIES
from deepfakenet.errors import DataLeakError
from deepfakenet.evaluation import (
    METRIC_COLUMNS,
    NATIVE,
    ProtocolSettings,
    robustness_table,
    to_markdown,
)
from deepfakenet.labels import FAKE_LABEL, REAL_LABEL
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.pipeline import require_one_process, train

log = logging.getLogger(__name__)

ALL = "all"
FAMILY_OUT = "family_out"
SOURCE_OUT = "source_out"
IN_DISTRIBUTION = "in_distribution"
DEMOSAIC = "demosaic"
"""The name of the mosaic + demosaic condition in ``conf/protocol`` (its own goal)."""

TABLE_COLUMNS = (
    "protocol",
    "held_out",
    "condition",
    "n_real",
    "n_fake",
    "auroc",
    "ap",
    "acc",
    "ece",
    "fpr",
    "tpr",
    "threshold",
)


# --------------------------------------------------------------------------------------------
# Folds and their data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One training run of the protocol and what it keeps out of train and val.

    Attributes:
        protocol: ``in_distribution`` (nothing held out), ``family_out`` or ``source_out``.
        held_out: The family or source held out (``""`` for ``in_distribution``).
    """

    protocol: str
    held_out: str = ""

    @property
    def name(self) -> str:
        """A short name for run names and folders: ``all``, ``family-<f>``, ``source-<s>``."""
        if self.protocol == IN_DISTRIBUTION:
            return ALL
        return f"{self.protocol.split('_')[0]}-{self.held_out}"

    @property
    def exclude_groups(self) -> list[str]:
        """``label/group`` folders kept out of train and val (the datamodule's argument)."""
        return [f"fake/{self.held_out}"] if self.protocol == FAMILY_OUT else []

    @property
    def exclude_sources(self) -> list[str]:
        """Real sources kept out of train and val with their fakes (the datamodule's argument)."""
        return [self.held_out] if self.protocol == SOURCE_OUT else []


def make_folds(
    families: Iterable[str], sources: Iterable[str], in_distribution: bool = True
) -> list[Fold]:
    """The folds of the protocol: everything, then each family out, then each source out."""
    folds = [Fold(IN_DISTRIBUTION)] if in_distribution else []
    folds += [Fold(FAMILY_OUT, family) for family in families]
    folds += [Fold(SOURCE_OUT, source) for source in sources]
    return folds


def fold_test_rows(index: pd.DataFrame, fold: Fold) -> pd.DataFrame:
    """The images a fold's model is scored on.

    - ``in_distribution``: the test split.
    - ``family_out``: the test-split reals plus *every* fake of the held-out family (no split
      of it was trained on, so all of it is unseen and the estimate is less noisy).
    - ``source_out``: every real of the held-out source and every fake made from its photos.

    Args:
        index: The datamodule's index (with its ``source`` column).
        fold: The fold.

    Returns:
        The selected index rows.
    """
    if fold.protocol == IN_DISTRIBUTION:
        return index[index["split"] == "test"]
    if fold.protocol == FAMILY_OUT:
        test_reals = (index["split"] == "test") & (index["label"] == REAL_LABEL)
        held_fakes = (index["label"] == FAKE_LABEL) & (index["group"] == fold.held_out)
        return index[test_reals | held_fakes]
    if fold.protocol == SOURCE_OUT:
        return index[index["source"] == fold.held_out]
    raise ValueError(f"unknown protocol {fold.protocol!r}")


def check_no_leak(datamodule: DeepfakeDataModule, fold: Fold) -> None:
    """Raise :class:`DataLeakError` if anything a fold holds out reaches train or val.

    Checked on the datamodule's own split selection (what the loaders actually read), by content
    hash as well as by name: a byte-identical copy under another folder is a leak too.

    Args:
        datamodule: The fold's datamodule (set up).
        fold: The fold.
    """
    if fold.protocol == IN_DISTRIBUTION:
        return
    datamodule.setup()  # scans once; a no-op when already set up
    index = datamodule.index
    assert index is not None  # for type checkers; setup() always sets it
    held = fold_test_rows(index, fold)
    held_out_rows = held if fold.protocol == SOURCE_OUT else held[held["label"] == FAKE_LABEL]
    held_hashes = set(held_out_rows["sha256"])
    for split in ("train", "val"):
        rows = datamodule.split_index(split)
        by_name = (
            (rows["group"] == fold.held_out) & (rows["label"] == FAKE_LABEL)
            if fold.protocol == FAMILY_OUT
            else rows["source"] == fold.held_out
        )
        leaked = int(by_name.sum()) + int(rows["sha256"].isin(held_hashes).sum())
        if leaked:
            raise DataLeakError(
                f"fold {fold.name}: {leaked} held-out images are in the {split} split"
            )


# --------------------------------------------------------------------------------------------
# Scoring (the cells themselves are deepfakenet.evaluation's)
# --------------------------------------------------------------------------------------------


def score_fold(
    net: DeepfakeNet, index: pd.DataFrame, fold: Fold, settings: ProtocolSettings
) -> pd.DataFrame:
    """The table rows of one trained fold.

    ``in_distribution`` gets every perturbation (and the full image); a held-out family is scored
    natively; a held-out source natively and under ``source_conditions``.
    """
    rows = fold_test_rows(index, fold)
    if fold.protocol == IN_DISTRIBUTION:
        table = robustness_table(
            net,
            rows,
            settings.perturbations,
            settings.full_image,
            settings.batch_size,
            settings.num_workers,
        )
    elif fold.protocol == FAMILY_OUT:
        table = robustness_table(net, rows, {}, False, settings.batch_size, settings.num_workers)
    else:
        conditions = {name: settings.perturbations[name] for name in settings.source_conditions}
        table = robustness_table(
            net, rows, conditions, False, settings.batch_size, settings.num_workers
        )
    table.insert(0, "held_out", fold.held_out or ALL)
    table.insert(0, "protocol", fold.protocol)
    # The fold's own validation-chosen threshold, which its FPR / TPR / accuracy are read at.
    table["threshold"] = float(net.threshold)
    return table


# --------------------------------------------------------------------------------------------
# Goals and formatting
# --------------------------------------------------------------------------------------------


def _cells(table: pd.DataFrame, protocol: str, condition: str) -> pd.DataFrame:
    return table[(table["protocol"] == protocol) & (table["condition"] == condition)]


def goal_summary(table: pd.DataFrame, goals: dict[str, float]) -> pd.DataFrame:
    """Check the table against the goals; one row per goal that the table can answer.

    Known goals: ``family_auroc_min`` (every held-out fixed-kernel family),
    ``learned_family_auroc_min`` (every held-out learned decoder), ``source_fpr_max`` (every
    held-out source, natively and downscaled), ``demosaic_fpr_max`` (reals through a mosaic +
    demosaic, in distribution and for every held-out source), ``jpeg75_auroc_drop_max`` (native
    minus ``jpeg75``, in distribution) and ``ece_max`` (in distribution, native, after
    calibration).

    Returns:
        Columns ``goal``, ``target``, ``value`` (the worst case), ``where`` and ``met``.
    """
    rows: list[dict[str, Any]] = []

    def add(goal: str, value: float, where: str, met: bool) -> None:
        rows.append(
            {"goal": goal, "target": goals[goal], "value": value, "where": where, "met": met}
        )

    def worst(goal: str, cells: pd.DataFrame, column: str, highest: bool) -> None:
        if goal not in goals or not len(cells) or cells[column].isna().all():
            return
        row = cells.loc[cells[column].idxmax() if highest else cells[column].idxmin()]
        value = float(row[column])
        met = value <= goals[goal] if highest else value >= goals[goal]
        add(goal, value, f"{row['held_out']}/{row['condition']}", met)

    families = table[table["protocol"] == FAMILY_OUT]
    learned = families["held_out"].isin(LEARNED_FAMILIES)
    worst("family_auroc_min", families[~learned], "auroc", highest=False)
    worst("learned_family_auroc_min", families[learned], "auroc", highest=False)
    demosaiced = table["condition"] == DEMOSAIC
    worst("source_fpr_max", table[(table["protocol"] == SOURCE_OUT) & ~demosaiced], "fpr", True)
    worst("demosaic_fpr_max", table[demosaiced], "fpr", highest=True)
    native = _cells(table, IN_DISTRIBUTION, NATIVE)
    if "jpeg75_auroc_drop_max" in goals:
        jpeg = _cells(table, IN_DISTRIBUTION, "jpeg75")
        if len(native) and len(jpeg):
            drop = float(native["auroc"].iloc[0] - jpeg["auroc"].iloc[0])
            add("jpeg75_auroc_drop_max", drop, "jpeg75", drop <= goals["jpeg75_auroc_drop_max"])
    if "ece_max" in goals and len(native):
        ece = float(native["ece"].iloc[0])
        add("ece_max", ece, "in_distribution/native", ece <= goals["ece_max"])
    return pd.DataFrame(rows, columns=["goal", "target", "value", "where", "met"])


# --------------------------------------------------------------------------------------------
# The whole protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneralisationResult:
    """What :func:`run_generalisation` produced.

    Attributes:
        table: One row per cell, columns :data:`TABLE_COLUMNS`.
        goals: :func:`goal_summary` of the table.
        run_id: The MLflow run holding the table artifacts.
        report_dir: Where ``generalisation.{md,csv,json}`` were written.
        fold_runs: Fold name -> MLflow run id of its training run.
        seconds: Wall time of the whole protocol.
    """

    table: pd.DataFrame
    goals: pd.DataFrame
    run_id: str
    report_dir: Path
    fold_runs: dict[str, str]
    seconds: float


def prepare_data(synth: DictConfig, data_dir: str | Path) -> pd.DataFrame:
    """Generate the protocol's data tree, or reuse it when made with the same settings.

    The generator is deterministic, so a tree with a matching ``synth.json`` beside it is the
    same data and regenerating it would only cost time.

    Returns:
        The generator's manifest (also kept as ``manifest.csv`` in ``data_dir``).
    """
    data_dir = Path(data_dir)
    settings = OmegaConf.to_container(synth, resolve=True)
    settings.pop("out_dir", None)
    marker, manifest_file = data_dir / "synth.json", data_dir / "manifest.csv"
    if marker.is_file() and manifest_file.is_file() and json.loads(marker.read_text()) == settings:
        log.info("reusing the protocol data in %s (same generator settings)", data_dir)
        return pd.read_csv(manifest_file, keep_default_na=False)
    log.info("generating the protocol data in %s", data_dir)
    manifest = hydra.utils.instantiate(synth, out_dir=str(data_dir), overwrite=True, progress=False)
    manifest.to_csv(manifest_file, index=False)
    marker.write_text(json.dumps(settings, sort_keys=True))
    return manifest


def _fold_config(cfg: DictConfig, fold: Fold, data_dir: Path, work_dir: Path) -> DictConfig:
    """The training config of one fold: the recipe, with its exclusions, not registered."""
    fold_cfg = cfg.copy()
    with open_dict(fold_cfg):
        fold_cfg.paths.data_dir = str(data_dir)
        # The protocol's generated tree is not the DVC-tracked data/: record it as untracked
        # rather than tag the fold runs with data.dvc's version of other data.
        fold_cfg.paths.dvc_file = str(data_dir / "not-versioned-by-dvc")
        fold_cfg.paths.output_dir = str(work_dir / "folds" / fold.name)
        fold_cfg.registry.experiment_name = cfg.protocol.experiment_name
        fold_cfg.data.exclude_groups = fold.exclude_groups
        fold_cfg.data.exclude_sources = fold.exclude_sources
        fold_cfg.register = False
        fold_cfg.metrics_file = None
        fold_cfg.task_name = f"generalisation-{fold.name}"
        fold_cfg.tags = [*(cfg.get("tags") or []), "generalisation", fold.name]
        fold_cfg.pop("protocol", None)
        fold_cfg.pop("synth", None)
    return fold_cfg


def run_generalisation(cfg: DictConfig) -> GeneralisationResult:
    """Run the whole protocol for the training recipe in ``cfg`` and log the table to MLflow.

    Args:
        cfg: A composed ``conf/generalisation.yaml``: the training recipe (``experiment=...``
            applies as for ``train``), ``synth`` (the data to generate) and ``protocol``.

    Returns:
        The table, the goal summary and where they were logged and written.
    """
    start = time.perf_counter()
    require_one_process(cfg, "the generalisation protocol")  # one training per fold, in-process
    settings = ProtocolSettings.from_config(cfg.protocol)
    work_dir = Path(cfg.protocol.work_dir)
    data_dir = work_dir / "data"
    manifest = prepare_data(cfg.synth, data_dir)
    # None means every one in the data; an empty list means none (e.g. sources only).
    if (families := settings.families) is None:
        families = sorted(set(manifest["family"]) - {""})
    if (sources := settings.sources) is None:
        sources = sorted(set(manifest["source"]))
    for kind, names, known in (
        ("families", families, set(manifest["family"]) - {""}),
        ("sources", sources, set(manifest["source"])),
    ):
        if unknown := sorted(set(names) - known):
            raise ValueError(f"protocol.{kind}: {unknown} not in the data (it has {sorted(known)})")
    folds = make_folds(families, sources, settings.in_distribution)
    log.info("generalisation protocol: %d folds %s", len(folds), [f.name for f in folds])

    report_dir = Path(cfg.protocol.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    partial = report_dir / "generalisation.partial.csv"
    tables, fold_runs = [], {}
    for fold in folds:
        log.info("fold %s: training", fold.name)
        fold_start = time.perf_counter()
        # A fresh folder per run: stale checkpoints of an earlier run must not be picked up.
        shutil.rmtree(work_dir / "folds" / fold.name, ignore_errors=True)
        fold_cfg = _fold_config(cfg, fold, data_dir, work_dir)
        # Checked before the fold spends its training time, on the split the loaders will read.
        check_no_leak(hydra.utils.instantiate(fold_cfg.data), fold)
        _, objects = train(fold_cfg)
        datamodule: DeepfakeDataModule = objects["datamodule"]
        net: DeepfakeNet = objects["model"].net.cpu().eval()
        assert datamodule.index is not None  # for type checkers; train() set it up
        tables.append(score_fold(net, datamodule.index, fold, settings))
        fold_runs[fold.name] = objects["run_id"]
        # Written as it goes: a long run that is stopped still leaves the folds it finished.
        pd.concat(tables, ignore_index=True).to_csv(partial, index=False)
        log.info(
            "fold %s done in %.0f s:\n%s",
            fold.name,
            time.perf_counter() - fold_start,
            to_markdown(tables[-1]),
        )
    table = pd.concat(tables, ignore_index=True)[list(TABLE_COLUMNS)]
    goals = goal_summary(table, settings.goals)
    seconds = time.perf_counter() - start

    partial.unlink(missing_ok=True)
    markdown = to_markdown(table) + "\n" + to_markdown(goals)
    (report_dir / "generalisation.md").write_text(markdown)
    table.to_csv(report_dir / "generalisation.csv", index=False)
    goals.to_csv(report_dir / "goals.csv", index=False)
    client = registry.use(registry.registry_config(cfg))
    registry.experiment_id(client, cfg.protocol.experiment_name, cfg.registry.artifact_location)
    mlflow.set_experiment(cfg.protocol.experiment_name)
    with mlflow.start_run(run_name="generalisation") as run:
        mlflow.set_tags(
            {
                "protocol": "generalisation",
                **{f"fold.{name}": run_id for name, run_id in fold_runs.items()},
                **{f"tag.{tag}": "true" for tag in cfg.get("tags") or []},
            }
        )
        mlflow.log_params(
            {
                "tags": ",".join(cfg.get("tags") or []),
                "folds": ",".join(f.name for f in folds),
                "synth/n_real": cfg.synth.n_real,
                "synth/n_fake": cfg.synth.n_fake,
                "trainer/max_epochs": cfg.trainer.max_epochs,
                "data/crop_size": cfg.data.crop_size,
                "data/eval_crop_size": cfg.data.eval_crop_size,
                "seed": cfg.get("seed"),
            }
        )
        mlflow.log_metrics(_table_metrics(table) | {"protocol/seconds": seconds})
        mlflow.log_text(markdown, "generalisation/generalisation.md")
        mlflow.log_text(table.to_csv(index=False), "generalisation/generalisation.csv")
        mlflow.log_text(goals.to_csv(index=False), "generalisation/goals.csv")
        run_id = run.info.run_id
    log.info("generalisation table (%.0f s), MLflow run %s:\n%s", seconds, run_id, markdown)
    return GeneralisationResult(table, goals, run_id, report_dir, fold_runs, seconds)


def _table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Every finite cell as an MLflow metric ``<protocol>/<held_out>/<condition>/<metric>``."""
    metrics = {}
    for row in table.itertuples(index=False):
        for column in METRIC_COLUMNS:
            value = float(getattr(row, column))
            if math.isfinite(value):
                metrics[f"{row.protocol}/{row.held_out}/{row.condition}/{column}"] = value
    return metrics
