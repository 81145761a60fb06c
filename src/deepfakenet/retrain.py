"""The feedback loop: corrected labels become data, a challenger is trained, the better one serves.

One run of :func:`retrain` (``make retrain``, safe to schedule with cron):

1. **Collect** feedback not used yet, one label per image (by content hash): majority of the
   votes, ties skipped (configurable). Fewer than ``min_new_labels`` images: nothing to do.
2. **Version the data**: the archived images are written to ``data/<label>/feedback/<sha>.png``,
   then ``dvc add data``, ``dvc push`` and (inside git) a commit of ``data.dvc``.
3. **Train a challenger** with the training pipeline on the new data version (fine-tuned from the
   champion's weights or from scratch), registered as a new MLflow version, never aliased yet.
4. **Compare** champion and challenger on the challenger's test split, three ways: the *fixed*
   test split (the original images: feedback cannot change it), the whole test split
   (feedback images that hash into it included), and the held-out feedback items alone, paired
   item by item. :func:`decide` applies the promotion rule (``promotion`` in the config).
5. **Promote** by moving the ``champion`` alias (the old one becomes ``previous``) when the
   challenger wins; ``make rollback`` swaps them back. Services polling the alias (or told via
   their admin reload endpoint) switch without a restart.

The promotion rule fails closed: a missing or NaN metric never promotes, and a registry that
cannot be read is an error (exit 1), never "no champion". Exit codes: :mod:`deepfakenet.cli`.

Safety: a file lock keeps two runs from overlapping; every step is idempotent (content-addressed
file names, DVC's own hashing); the decision is logged, then the feedback is marked used, and
moving the alias is the very last change, so a run that fails (exit 1) has moved nothing. The
job's MLflow run always ends FINISHED or FAILED. A crash anywhere leaves the data, the registry
and the store consistent, and the next run redoes the unfinished work.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import filelock
import httpx
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, open_dict

from deepfakenet import registry
from deepfakenet.cli import ExitCode  # noqa: F401 - re-exported for older imports
from deepfakenet.config import RetrainSchema, validate
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.errors import DeepFakeNetError, JobLockedError
from deepfakenet.evaluation import score_rows
from deepfakenet.files import atomic_write
from deepfakenet.labels import LABELS
from deepfakenet.lineage import data_version
from deepfakenet.metrics import defined_metrics
from deepfakenet.security import redact
from deepfakenet.store import ImageArchive, Store, collect_labels, utcnow

log = logging.getLogger(__name__)


class RetrainLockedError(JobLockedError):
    """Another retraining run holds the lock (exit code 75)."""


@dataclass
class RetrainReport:
    """What a run did; written as ``report.json`` and logged to MLflow.

    ``champion_metrics``/``challenger_metrics`` hold the whole test split's metrics under their
    plain names (``auroc``, ...), the fixed split's as ``fixed_<name>``, the class counts each
    rests on (``n_real``, ``fixed_n_fake``, ...), and ``feedback_error``/``feedback_items`` for
    the held-out feedback items; ``feedback`` is the paired comparison on those items.
    """

    status: str  # nothing_to_do | promoted | kept | failed
    started_at: str
    new_labels: int = 0
    skipped_ties: int = 0
    skipped_missing_images: int = 0
    data_version: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    challenger_run_id: str | None = None
    job_run_id: str | None = None
    promoted_at: str | None = None  # when the champion alias moved (UTC, ISO 8601)
    champion_metrics: dict[str, float | None] = field(default_factory=dict)
    challenger_metrics: dict[str, float | None] = field(default_factory=dict)
    feedback: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ 1. collect


# ------------------------------------------------------------------------------ 2. version


def write_feedback_images(
    labels: pd.DataFrame, archive: ImageArchive, data_dir: Path, folder: str
) -> tuple[list[str], int]:
    """Copy each labelled image into ``data_dir/<label>/<folder>/<sha>.png`` (idempotent).

    A relabelled image is removed from the other class's folder, so the tree never holds the
    same image under both labels. Images no longer in the archive (purged) are skipped.

    Returns:
        ``(written_shas, missing)``.
    """
    written, missing = [], 0
    for row in labels.itertuples():
        source = archive.path(row.sha256)
        if not source.is_file():
            log.warning("image %s is no longer archived; its feedback is skipped", row.sha256)
            missing += 1
            continue
        for other in LABELS:
            if other != row.label:
                (data_dir / other / folder / f"{row.sha256}.png").unlink(missing_ok=True)
        target = data_dir / row.label / folder / f"{row.sha256}.png"
        if not target.exists():
            content = source.read_bytes()
            atomic_write(target, lambda handle, data=content: handle.write(data))
        written.append(row.sha256)
    return written, missing


def _run(args: list[str], cwd: Path) -> str:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode != 0:
        raise DeepFakeNetError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def version_data(root: Path, data_dir: Path, push: bool, git_commit: bool, message: str) -> str:
    """``dvc add`` the data tree (then push, and commit ``data.dvc`` inside git); its md5."""
    dvc = [sys.executable, "-m", "dvc"]
    target = os.path.relpath(data_dir, root)
    _run([*dvc, "add", target], root)
    version = data_version(root / f"{target}.dvc")
    if push:
        _run([*dvc, "push", f"{target}.dvc"], root)
    inside_git = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, check=False
    )
    if git_commit and inside_git.returncode == 0:
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", f"{target}.dvc"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if changed:
            _run(["git", "add", "--", f"{target}.dvc"], root)
            _run(["git", "commit", "-m", message, "--", f"{target}.dvc"], root)
    log.info("data version %s (pushed: %s)", version, push)
    return version


# ------------------------------------------------------------------------------ 4. compare


def _finite(value: object) -> bool:
    """A usable number: not None, not NaN, not infinite."""
    return isinstance(value, int | float) and math.isfinite(value)


def _subset_metrics(
    prob: torch.Tensor, targets: torch.Tensor, threshold: float
) -> dict[str, float | None]:
    """``compute_metrics`` and class counts; None where a metric means nothing.

    torchmetrics answers 0 for the AUROC of a one-class set; a 0 that both models share would
    read as "not worse", so an empty or one-class set gives None and the rule cannot promote.
    A model that scores any image as NaN is broken: no metric at all.
    """
    n_real, n_fake = int((targets == 0).sum()), int((targets == 1).sum())
    metrics = defined_metrics(prob, targets, threshold)
    return metrics | {"n_real": float(n_real), "n_fake": float(n_fake)}


def split_metrics(
    prob: torch.Tensor, targets: torch.Tensor, threshold: float, is_feedback: np.ndarray
) -> tuple[dict[str, float | None], np.ndarray]:
    """One model's metrics on the test split: whole, fixed (no feedback images), feedback items.

    Args:
        prob: Calibrated ``P(fake)`` of every test row.
        targets: 0/1 targets of the same rows.
        threshold: The model's decision threshold.
        is_feedback: True for the rows that are feedback images.

    Returns:
        ``(metrics, wrong)``: the metrics (whole split under plain names, the fixed split as
        ``fixed_*``, ``feedback_error`` and ``feedback_items``; None where undefined), and per
        feedback item 1.0 when the model is wrong, 0.0 when right, NaN when its probability is
        not finite (unscored).
    """
    fixed = torch.as_tensor(~is_feedback)
    metrics = _subset_metrics(prob, targets, threshold)
    fixed_metrics = _subset_metrics(prob[fixed], targets[fixed], threshold)
    metrics.update({f"fixed_{key}": value for key, value in fixed_metrics.items()})
    fb = torch.as_tensor(is_feedback)
    fb_prob, fb_targets = prob[fb].double(), targets[fb].long()
    wrong = ((fb_prob >= threshold).long() != fb_targets).double()
    wrong[~torch.isfinite(fb_prob)] = math.nan
    wrong_np = wrong.numpy()
    scored = wrong_np[np.isfinite(wrong_np)]
    metrics["feedback_items"] = float(len(wrong_np))
    metrics["feedback_error"] = float(scored.mean()) if len(scored) else None
    return metrics, wrong_np


def mcnemar_exact_p(champion_only_wrong: int, challenger_only_wrong: int) -> float:
    """Two-sided exact McNemar p-value: the sign test on the discordant pairs.

    Under "both models are equally good", each item only one of them gets wrong is the
    champion's miss or the challenger's with probability 1/2; the p-value is twice the binomial
    tail of the smaller count (capped at 1). No discordant item gives 1: no evidence.
    """
    n = champion_only_wrong + challenger_only_wrong
    if n == 0:
        return 1.0
    smaller = min(champion_only_wrong, challenger_only_wrong)
    tail = sum(math.comb(n, k) for k in range(smaller + 1)) / 2**n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class FeedbackComparison:
    """Champion and challenger on the same held-out feedback items, paired.

    Attributes:
        items: Items both models scored (finite probabilities).
        unscored: Items at least one model could not score (left out of the pairing).
        champion_errors: Items the champion gets wrong.
        challenger_errors: Items the challenger gets wrong.
        champion_only_wrong: Items only the champion gets wrong (the challenger's gain).
        challenger_only_wrong: Items only the challenger gets wrong (its loss).
        p_value: Two-sided exact McNemar p-value of the discordant counts.
    """

    items: int
    unscored: int
    champion_errors: int
    challenger_errors: int
    champion_only_wrong: int
    challenger_only_wrong: int
    p_value: float


def paired_feedback(
    champion_wrong: Sequence[float], challenger_wrong: Sequence[float]
) -> FeedbackComparison:
    """Pair two models' per-item mistakes (1 wrong, 0 right, NaN unscored) on the same items."""
    ours = np.asarray(challenger_wrong, dtype=float)
    theirs = np.asarray(champion_wrong, dtype=float)
    if ours.shape != theirs.shape:
        raise ValueError(f"the models scored different items: {theirs.shape} vs {ours.shape}")
    both = np.isfinite(ours) & np.isfinite(theirs)
    ours, theirs = ours[both] > 0.5, theirs[both] > 0.5
    gain, loss = int((theirs & ~ours).sum()), int((ours & ~theirs).sum())
    return FeedbackComparison(
        items=int(both.sum()),
        unscored=int((~both).sum()),
        champion_errors=int(theirs.sum()),
        challenger_errors=int(ours.sum()),
        champion_only_wrong=gain,
        challenger_only_wrong=loss,
        p_value=mcnemar_exact_p(gain, loss),
    )


def _judge_split(
    what: str,
    prefix: str,
    champion: dict[str, float | None],
    challenger: dict[str, float | None],
    rule: Any,
) -> tuple[bool, bool, str]:
    """``(not_worse, better, reason)`` of one test split's metric; missing or NaN fails."""
    key = f"{prefix}{rule.metric}"
    drop, gain = float(rule.max_drop), float(rule.min_gain)
    ours, theirs = challenger.get(key), champion.get(key)
    n_real, n_fake = challenger.get(f"{prefix}n_real"), challenger.get(f"{prefix}n_fake")
    if _finite(n_real) and _finite(n_fake):
        what = f"{what} ({int(n_real or 0)} real, {int(n_fake or 0)} fake)"
    if not (_finite(ours) and _finite(theirs)):
        return (
            False,
            False,
            f"{what}: {key} is missing or NaN (challenger {ours}, champion {theirs}); "
            "no promotion without it",
        )
    ours, theirs = float(ours or 0), float(theirs or 0)  # finite, checked above
    versus = f"challenger {key} {ours:.4f} vs champion {theirs:.4f}"
    if ours < theirs - drop:
        return False, False, f"{what}: WORSE, {versus}, more than max_drop {drop} below"
    if ours > theirs + gain:
        return True, True, f"{what}: BETTER, {versus}"
    return (
        True,
        False,
        f"{what}: not worse, not better ({versus}; max_drop {drop}, min_gain {gain})",
    )


def _judge_feedback(feedback: FeedbackComparison | None, rule: Any) -> tuple[bool, bool, str]:
    """``(not_worse, better, reason)`` on the held-out feedback items (paired McNemar test)."""
    what = "held-out feedback items"
    if feedback is None or feedback.items == 0:
        return True, False, f"{what}: none in the test split; no evidence either way"
    min_items, alpha = int(rule.min_items), float(rule.alpha)
    counts = (
        f"{feedback.items} items; champion wrong on {feedback.champion_errors}, challenger on "
        f"{feedback.challenger_errors}; only the champion on {feedback.champion_only_wrong}, "
        f"only the challenger on {feedback.challenger_only_wrong}; exact McNemar "
        f"p={feedback.p_value:.3g}"
    )
    if feedback.items < min_items:
        return True, False, f"{what}: {counts}; fewer than min_items={min_items}: no evidence"
    gain, loss = feedback.champion_only_wrong, feedback.challenger_only_wrong
    if feedback.p_value <= alpha and loss > gain:
        return False, False, f"{what}: WORSE, {counts} <= alpha {alpha}"
    if feedback.p_value <= alpha and gain > loss:
        return True, True, f"{what}: BETTER, {counts} <= alpha {alpha}"
    why = "a tie" if gain == loss else f"not significant at alpha {alpha}"
    return True, False, f"{what}: {counts}; {why}: no evidence either way"


def decide(
    champion: dict[str, float | None],
    challenger: dict[str, float | None],
    feedback: FeedbackComparison | None,
    rule: Any,
) -> tuple[bool, list[str]]:
    """Apply the promotion rule; return the decision and one reason per criterion, then a verdict.

    The challenger is promoted when it is

    1. not worse than the champion by more than ``max_drop`` on the *fixed* test split (the
       original images, ``fixed_<metric>``), which feedback cannot change,
    2. nor on the whole test split (``<metric>``, feedback images that hash into it included),
    3. not worse on the held-out feedback items, and
    4. better on at least one of the evidence sets (``require_improvement``): a fixed-split
       gain above ``min_gain``, or fewer mistakes on the feedback items.

    On the feedback items the two models are compared item by item with the two-sided exact
    McNemar test: only items exactly one of them gets wrong say anything. With fewer than
    ``feedback.min_items`` items, a tie, or a difference with ``p > feedback.alpha``, the items
    are *no evidence* (neither a loss nor a gain), so a handful of shared mistakes cannot block
    a challenger the test split shows to be better, and one lucky item cannot promote one.

    Fails closed: a missing or NaN test metric on either split never promotes.

    Args:
        champion: The champion's metrics (see :func:`split_metrics`).
        challenger: The challenger's metrics, same keys.
        feedback: The paired comparison on held-out feedback items (None: there are none).
        rule: ``metric``, ``max_drop``, ``min_gain``, ``require_improvement``, and
            ``feedback.min_items`` / ``feedback.alpha`` (``conf/retrain.yaml``'s ``promotion``).
    """
    fixed_ok, fixed_better, fixed_reason = _judge_split(
        "fixed test split (original images)", "fixed_", champion, challenger, rule
    )
    full_ok, _, full_reason = _judge_split(
        "whole test split (with feedback images)", "", champion, challenger, rule
    )
    fb_ok, fb_better, fb_reason = _judge_feedback(feedback, rule.feedback)
    reasons = [fixed_reason, full_reason, fb_reason]
    not_worse = fixed_ok and full_ok and fb_ok
    better = [
        name for name, ok in (("fixed test split", fixed_better), ("feedback", fb_better)) if ok
    ]
    if not not_worse:
        reasons.append("decision: keep the champion: the challenger is worse or unmeasured above")
        return False, reasons
    if better:
        reasons.append(
            f"decision: promote: not worse anywhere, better on the {' and '.join(better)}"
        )
        return True, reasons
    if not bool(rule.require_improvement):
        reasons.append("decision: promote: not worse anywhere (require_improvement=false)")
        return True, reasons
    reasons.append(
        "decision: keep the champion: not worse, but better on neither the fixed test split nor "
        "the feedback items"
    )
    return False, reasons


# ------------------------------------------------------------------------------ the job


def retrain(cfg: DictConfig, train_cfg: DictConfig) -> RetrainReport:
    """Run the whole loop once under the lock (see the module docstring).

    Args:
        cfg: A composed ``conf/retrain.yaml``; checked against
            :class:`~deepfakenet.config.RetrainSchema` first.
        train_cfg: The composed training config the challenger runs (``conf/train.yaml`` with
            ``cfg.train_overrides``); its paths and registry are taken from ``cfg``.

    Raises:
        ConfigError: ``cfg`` has an unknown key or a bad value (exit 2).
        RetrainLockedError: Another run holds the lock (exit 75).
        RegistryError: There is no champion to compare with (exit 2).
    """
    settings = validate(cfg, RetrainSchema, "conf/retrain.yaml")
    # The challenger trains inside this job: Lightning's DDP launcher would start the whole
    # job again in every extra process (each would collect, version data and promote).
    from deepfakenet.pipeline import require_one_process  # heavy: Lightning

    require_one_process(train_cfg, "retrain's challenger (train_overrides)")
    lock = filelock.FileLock(settings.lock_file)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as err:
        raise RetrainLockedError(
            f"another retraining run holds {settings.lock_file}; this run does nothing"
        ) from err
    try:
        return _retrain_locked(cfg, settings, train_cfg)
    finally:
        lock.release()


def _retrain_locked(
    cfg: DictConfig, settings: RetrainSchema, train_cfg: DictConfig
) -> RetrainReport:
    report = RetrainReport(status="nothing_to_do", started_at=utcnow().isoformat())
    if settings.challenger is not None:
        return _gate_registered(cfg, settings, train_cfg, report)
    store = Store(settings.store.url)
    try:
        collect = settings.collect
        collected_at = utcnow()  # a vote changed after this is not consumed by this run
        labels, report.skipped_ties = collect_labels(store, collect.min_votes, collect.tie)
        root, data_dir = Path(settings.paths.root_dir), Path(settings.paths.data_dir)
        archive = ImageArchive(settings.store.image_dir)
        archive.purge(
            timedelta(days=settings.store.image_retention_days),
            keep=store.shas_with_feedback(),
        )
        usable = labels[labels["sha256"].map(archive.exists).astype(bool)]
        report.skipped_missing_images = len(labels) - len(usable)
        report.new_labels = len(usable)
        if len(usable) < collect.min_new_labels:
            report.reasons.append(
                f"nothing to do: {len(usable)} new labelled images, fewer than "
                f"min_new_labels={collect.min_new_labels}"
            )
            log.info(report.reasons[-1])
            return _finish(settings.report_dir, report)

        client = registry.use(registry.registry_config(cfg))
        name = settings.registry.model_name
        # No champion is an expected refusal (RegistryError, exit 2); an unreadable registry
        # is an error (exit 1): either way before anything is written.
        champion = registry.resolve_version(client, name, registry.CHAMPION)
        report.champion_version = str(champion.version)

        written, _ = write_feedback_images(usable, archive, data_dir, settings.data.feedback_folder)
        report.data_version = version_data(
            root,
            data_dir,
            settings.data.dvc_push,
            settings.data.git_commit,
            f"data: {len(written)} images from feedback (retrain)",
        )

        report.job_run_id = _start_job_run(client, cfg, report)

        def train_and_compare() -> None:
            _train_and_compare(cfg, settings, train_cfg, client, champion, report)
            # Consumed whatever the decision: the images are in this data version now.
            store.mark_feedback_used(
                [i for ids in usable["feedback_ids"] for i in ids],
                used_by=f"data:{report.data_version} run:{report.job_run_id}",
                collected_at=collected_at,
            )

        return _judged(cfg, settings, client, report, train_and_compare, "retraining")
    finally:
        store.close()


def _gate_registered(
    cfg: DictConfig, settings: RetrainSchema, train_cfg: DictConfig, report: RetrainReport
) -> RetrainReport:
    """Put an already registered version (``challenger=N``, e.g. a federated one) through the gate.

    Nothing is collected, versioned or trained: the version is compared with the champion on
    the current data tree's test split by the same :func:`decide` as a trained challenger, and
    promoted only if it wins. Its feedback is left for the next ordinary run.
    """
    client = registry.use(registry.registry_config(cfg))
    name = settings.registry.model_name
    champion = registry.resolve_version(client, name, registry.CHAMPION)
    challenger = registry.resolve_version(client, name, str(settings.challenger))
    report.champion_version = str(champion.version)
    report.challenger_version = str(challenger.version)
    if report.challenger_version == report.champion_version:
        report.reasons.append(f"v{challenger.version} is already the champion: nothing to do")
        log.info(report.reasons[-1])
        return _finish(settings.report_dir, report)
    report.data_version = data_version(Path(settings.paths.root_dir) / "data.dvc")
    report.job_run_id = _start_job_run(client, cfg, report)

    def compare() -> None:
        import hydra  # heavy: only where a data module is built

        datamodule: DeepfakeDataModule = hydra.utils.instantiate(
            train_cfg.data, data_dir=settings.paths.data_dir
        )
        _compare(settings, train_cfg, client, champion, challenger, datamodule, report)

    return _judged(cfg, settings, client, report, compare, "the gate")


def _judged(
    cfg: DictConfig,
    settings: RetrainSchema,
    client: Any,
    report: RetrainReport,
    work: Callable[[], None],
    job: str,
) -> RetrainReport:
    """Run ``work`` (it sets ``report.status``), then move the alias if it said "promoted".

    Moving the alias is the very last change, after everything else held. A failure anywhere
    marks the job's run FAILED, writes the report and re-raises: nothing has moved. After the
    alias moved, nothing may turn the run into a failure, so ending the run is best effort.
    """
    try:
        work()
        if report.status == "promoted":
            registry.promote(client, settings.registry.model_name, report.challenger_version)
            report.promoted_at = utcnow().isoformat()
    except BaseException as err:
        report.reasons.append(f"failed: {type(err).__name__}: {redact(err, cfg.store.url)}")
        report.status = "failed"
        _end_run(client, report.job_run_id, "FAILED", decision="failed")
        _finish(settings.report_dir, report)
        log.error("%s failed; the champion is unchanged", job)
        raise
    _end_run(client, report.job_run_id, "FINISHED")
    if report.status == "promoted":
        notify_service(cfg.notify)
    return _finish(settings.report_dir, report)


def _start_job_run(client: Any, cfg: DictConfig, report: RetrainReport) -> str:
    """The retraining job's own MLflow run (the challenger's training run becomes its child)."""
    experiment_id = registry.experiment_id(
        client, cfg.registry.experiment_name, cfg.registry.artifact_location
    )
    run = client.create_run(
        experiment_id,
        run_name="retrain",
        tags={
            registry.RETRAIN_TAG: "true",
            f"{registry.RETRAIN_TAG}.data_version": str(report.data_version),
            f"{registry.RETRAIN_TAG}.champion_version": str(report.champion_version),
            # "gate": a registered version judged as it is (challenger=N), nothing trained
            f"{registry.RETRAIN_TAG}.mode": "gate" if cfg.get("challenger") else "train",
        },
    )
    return run.info.run_id


def _train_and_compare(
    cfg: DictConfig,
    settings: RetrainSchema,
    train_cfg: DictConfig,
    client: Any,
    champion: Any,
    report: RetrainReport,
) -> None:
    """Train the challenger, score both models on its test split, decide (nothing moves here)."""
    from deepfakenet.pipeline import train  # heavy: Lightning

    _, objects = train(_challenger_config(cfg, train_cfg, champion.version))
    challenger = objects["model_version"]
    report.challenger_version = str(challenger.version)
    report.challenger_run_id = objects["run_id"]
    client.set_tag(objects["run_id"], "mlflow.parentRunId", report.job_run_id)
    _compare(settings, train_cfg, client, champion, challenger, objects["datamodule"], report)


def _compare(
    settings: RetrainSchema,
    train_cfg: DictConfig,
    client: Any,
    champion: Any,
    challenger: Any,
    datamodule: DeepfakeDataModule,
    report: RetrainReport,
) -> None:
    """Score both versions on the test split of ``datamodule`` and decide (nothing moves here)."""
    from deepfakenet.pipeline import MIN_TEST_PER_CLASS, small_split_note  # heavy: Lightning

    name = settings.registry.model_name
    test = datamodule.split_index("test")
    is_feedback = (test["group"] == settings.data.feedback_folder).to_numpy()
    wrong: dict[str, np.ndarray] = {}
    for role, version in (("champion", champion.version), ("challenger", challenger.version)):
        net, _ = registry.load_net(name, version)
        prob, targets = score_rows(net, test, batch_size=int(train_cfg.data.batch_size))
        metrics, wrong[role] = split_metrics(prob, targets, float(net.threshold), is_feedback)
        setattr(report, f"{role}_metrics", metrics)
        out = Path(settings.report_dir) / role
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(
            json.dumps({"model_version": str(version), "metrics": metrics}, indent=2)
        )
    comparison = paired_feedback(wrong["champion"], wrong["challenger"])
    report.feedback = asdict(comparison)
    promote, report.reasons = decide(
        report.champion_metrics, report.challenger_metrics, comparison, settings.promotion
    )
    note = small_split_note(
        {
            "real": report.challenger_metrics["fixed_n_real"] or 0,
            "fake": report.challenger_metrics["fixed_n_fake"] or 0,
        },
        int(train_cfg.get("min_test_per_class", MIN_TEST_PER_CLASS)),
        "fixed test split",
    )
    if note:
        report.reasons.insert(0, note)
    report.status = "promoted" if promote else "kept"
    _log_job(client, report)  # the decision is on record before anything changes
    log.info(
        "challenger v%s %s:\n  %s", challenger.version, report.status, "\n  ".join(report.reasons)
    )


def _challenger_config(cfg: DictConfig, train_cfg: DictConfig, champion: str) -> DictConfig:
    """The training config of the challenger: retrain's paths/registry, tags, warm start."""
    out = train_cfg.copy()
    with open_dict(out):
        out.paths = cfg.paths
        out.registry = cfg.registry
        out.tags = [*list(out.get("tags") or []), "retrain"]
        out.init_from = champion if cfg.init_from_champion else None
        out.metrics_file = None
    return out


def notify_service(notify: DictConfig) -> None:
    """Ask a running service to load the champion now (optional; it may also poll the alias).

    Args:
        notify: ``service_url`` (None: do nothing) and ``admin_token``.
    """
    url, token = notify.service_url, notify.admin_token
    if not url:
        return
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/admin/reload",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=120,
        )
        response.raise_for_status()
        log.info("service at %s now serves %s", redact(url), response.json().get("model_version"))
    except Exception as err:  # the alias already moved; the service will poll or restart
        log.warning("could not notify the service at %s: %s", redact(url), redact(err, url))


def _log_job(client: Any, report: RetrainReport) -> None:
    run_id = report.job_run_id
    client.set_tag(run_id, registry.DECISION_TAG, report.status)
    client.set_tag(run_id, f"{registry.RETRAIN_TAG}.challenger_version", report.challenger_version)
    client.set_tag(run_id, f"{registry.RETRAIN_TAG}.new_labels", str(report.new_labels))
    for role in ("champion", "challenger"):
        for key, value in getattr(report, f"{role}_metrics").items():
            if _finite(value):
                client.log_metric(run_id, f"retrain/{role}_{key}", float(value))
    for key in ("items", "champion_only_wrong", "challenger_only_wrong", "p_value"):
        if _finite(report.feedback.get(key)):
            client.log_metric(run_id, f"retrain/feedback_{key}", float(report.feedback[key]))
    client.log_text(
        run_id, json.dumps(asdict(report), indent=2, default=str), "retrain/report.json"
    )


def _end_run(client: Any, run_id: str, status: str, decision: str | None = None) -> None:
    """End the job's run (and correct its decision tag); best effort, never raises.

    It never hides the error being raised, and after a promotion it never turns a done job into
    a failed one (an outage may stop these calls too).
    """
    try:
        if decision is not None:  # e.g. "promoted" was logged, then the promotion failed
            client.set_tag(run_id, registry.DECISION_TAG, decision)
        client.set_terminated(run_id, status=status)
    except Exception:
        log.exception("could not mark the job's MLflow run %s as %s", run_id, status)


def _finish(report_dir: str, report: RetrainReport) -> RetrainReport:
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    return report
