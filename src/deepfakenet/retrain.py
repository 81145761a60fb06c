"""The feedback loop: corrected labels become data, a challenger is trained, the better one serves.

One run of :func:`retrain` (``make retrain``, safe to schedule with cron):

1. **Collect** feedback not used yet, one label per image (by content hash): majority of the
   votes, ties skipped (configurable). Fewer than ``min_new_labels`` images: nothing to do.
2. **Version the data**: the archived images are written to ``data/<label>/feedback/<sha>.png``,
   then ``dvc add data``, ``dvc push`` and (inside git) a commit of ``data.dvc``.
3. **Train a challenger** with the training pipeline on the new data version (fine-tuned from the
   champion's weights or from scratch), registered as a new MLflow version, never aliased yet.
4. **Compare** champion and challenger on the same fixed test split (the content-hash split keeps
   it fixed, and feedback images that hash into it are part of it) and on the held-out feedback
   items alone; the promotion rule is config.
5. **Promote** by moving the ``champion`` alias (the old one becomes ``previous``) when the
   challenger wins; ``make rollback`` swaps them back. Services polling the alias (or told via
   their admin reload endpoint) switch without a restart.

Safety: a file lock keeps two runs from overlapping; every step is idempotent (content-addressed
file names, DVC's own hashing), feedback is marked used only once the run has decided, and the
alias moves only after the challenger is registered and evaluated. A crash anywhere leaves the
data, the registry and the store consistent, and the next run redoes the unfinished work.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any

import filelock
import httpx
import pandas as pd
from omegaconf import DictConfig, open_dict

from deepfakenet import registry
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.errors import DeepFakeNetError
from deepfakenet.files import atomic_write
from deepfakenet.labels import LABELS
from deepfakenet.lineage import data_version
from deepfakenet.protocol import score_rows
from deepfakenet.store import ImageArchive, Store, utcnow

log = logging.getLogger(__name__)


class ExitCode(IntEnum):
    """Process exit codes of the job, for cron and systemd."""

    OK = 0  # promoted, kept the champion, or nothing to do
    FAILED = 1  # an error; nothing was promoted (see the log)
    LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later


class RetrainLockedError(DeepFakeNetError):
    """Another retraining run holds the lock."""


@dataclass
class RetrainReport:
    """What a run did; written as ``report.json`` and logged to MLflow."""

    status: str  # nothing_to_do | promoted | kept
    started_at: str
    new_labels: int = 0
    skipped_ties: int = 0
    skipped_missing_images: int = 0
    data_version: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    challenger_run_id: str | None = None
    job_run_id: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ 1. collect


def collect_labels(store: Store, min_votes: int = 1, tie: str = "skip") -> tuple[pd.DataFrame, int]:
    """One label per image that received feedback not used yet.

    The label is the majority of *all* the image's votes (used ones included), so one late
    vote cannot overturn an image many people agreed on; an image counts as new when at least
    one of its votes is unused.

    Args:
        store: The prediction + feedback store.
        min_votes: Least number of votes an image needs.
        tie: ``skip`` drops images whose votes are tied; ``latest`` takes the newest vote.

    Returns:
        ``(labels, ties)``: a frame with ``sha256``, ``label``, ``votes``, ``feedback_ids`` (the
        unused ones, to mark once consumed), sorted by hash; and how many images were skipped
        as ties.
    """
    if tie not in {"skip", "latest"}:
        raise ValueError(f"tie must be 'skip' or 'latest', got {tie!r}")
    feedback = store.feedback_frame()
    fresh = set(feedback.loc[feedback["used_at"].isna(), "sha256"])
    rows, ties = [], 0
    for sha, group in feedback[feedback["sha256"].isin(fresh)].groupby("sha256", sort=True):
        if len(group) < min_votes:
            continue
        counts = group["human_label"].value_counts()
        top = counts[counts == counts.max()]
        if len(top) > 1:
            if tie == "skip":
                ties += 1
                continue
            label = group.sort_values("created_at")["human_label"].iloc[-1]
        else:
            label = top.index[0]
        unused = group.loc[group["used_at"].isna(), "feedback_id"].tolist()
        rows.append({"sha256": sha, "label": label, "votes": len(group), "feedback_ids": unused})
    return pd.DataFrame(rows, columns=["sha256", "label", "votes", "feedback_ids"]), ties


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


def feedback_error(net: Any, rows: pd.DataFrame, batch_size: int = 64) -> float | None:
    """Share of ``rows`` (index rows of the data tree) the network gets wrong; None if empty."""
    if rows.empty:
        return None
    prob, targets = score_rows(net, rows, batch_size=batch_size)
    return float((net.decide(prob) != targets).float().mean())


def decide(
    champion: dict[str, float | None], challenger: dict[str, float | None], rule: DictConfig
) -> tuple[bool, list[str]]:
    """Apply the promotion rule; return the decision and the reasons, one per criterion."""
    metric, drop = str(rule.metric), float(rule.max_drop)
    promote, reasons = True, []
    ours, theirs = challenger[metric], champion[metric]
    if ours is None or theirs is None or ours < theirs - drop:
        promote = False
        reasons.append(f"{metric}: challenger {ours} < champion {theirs} - {drop}")
    else:
        reasons.append(f"{metric}: challenger {ours:.4f} >= champion {theirs:.4f} - {drop}")
    ours_fb, theirs_fb = challenger.get("feedback_error"), champion.get("feedback_error")
    if ours_fb is None or theirs_fb is None:
        reasons.append("feedback error: no held-out feedback items, criterion not applied")
    elif rule.feedback_must_improve and not ours_fb < theirs_fb:
        promote = False
        reasons.append(
            f"feedback error: challenger {ours_fb:.4f} not below champion {theirs_fb:.4f}"
        )
    else:
        reasons.append(f"feedback error: challenger {ours_fb:.4f} vs champion {theirs_fb:.4f}")
    return promote, reasons


# ------------------------------------------------------------------------------ the job


def retrain(cfg: DictConfig, train_cfg: DictConfig, eval_cfg: DictConfig) -> RetrainReport:
    """Run the whole loop once under the lock (see the module docstring).

    Args:
        cfg: A composed ``conf/retrain.yaml``.
        train_cfg: The composed training config the challenger runs (``conf/train.yaml`` with
            ``cfg.train_overrides``); its paths and registry are taken from ``cfg``.
        eval_cfg: A composed ``conf/evaluate.yaml`` (paths and registry taken from ``cfg``).

    Raises:
        RetrainLockedError: Another run holds the lock.
    """
    lock = filelock.FileLock(str(cfg.lock_file))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as err:
        raise RetrainLockedError(
            f"another retraining run holds {cfg.lock_file}; this run does nothing"
        ) from err
    try:
        return _retrain_locked(cfg, train_cfg, eval_cfg)
    finally:
        lock.release()


def _retrain_locked(cfg: DictConfig, train_cfg: DictConfig, eval_cfg: DictConfig) -> RetrainReport:
    report = RetrainReport(status="nothing_to_do", started_at=utcnow().isoformat())
    store = Store(cfg.store.url)
    try:
        labels, report.skipped_ties = collect_labels(store, cfg.collect.min_votes, cfg.collect.tie)
        root, data_dir = Path(cfg.paths.root_dir), Path(cfg.paths.data_dir)
        archive = ImageArchive(cfg.store.image_dir)
        archive.purge(
            timedelta(days=float(cfg.store.image_retention_days)),
            keep=store.shas_with_feedback(),
        )
        usable = labels[labels["sha256"].map(archive.exists).astype(bool)]
        report.skipped_missing_images = len(labels) - len(usable)
        report.new_labels = len(usable)
        if len(usable) < cfg.collect.min_new_labels:
            report.reasons.append(
                f"nothing to do: {len(usable)} new labelled images, fewer than "
                f"min_new_labels={cfg.collect.min_new_labels}"
            )
            log.info(report.reasons[-1])
            return _finish(cfg, report)

        client = registry.use(registry.registry_config(cfg))
        name = cfg.registry.model_name
        champion = registry.resolve_version(client, name, registry.CHAMPION)
        report.champion_version = str(champion.version)

        written, _ = write_feedback_images(usable, archive, data_dir, cfg.data.feedback_folder)
        report.data_version = version_data(
            root,
            data_dir,
            cfg.data.dvc_push,
            cfg.data.git_commit,
            f"data: {len(written)} images from feedback (retrain)",
        )

        report.job_run_id = _start_job_run(client, cfg, report)
        try:
            _train_and_compare(cfg, train_cfg, eval_cfg, client, champion, report)
        except BaseException:
            client.set_terminated(report.job_run_id, status="FAILED")
            raise
        store.mark_feedback_used(
            [i for ids in usable["feedback_ids"] for i in ids],
            used_by=f"data:{report.data_version} run:{report.job_run_id}",
        )
        client.set_terminated(report.job_run_id, status="FINISHED")
        if report.status == "promoted":
            notify_service(cfg.notify)
        return _finish(cfg, report)
    finally:
        store.close()


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
        },
    )
    return run.info.run_id


def _train_and_compare(
    cfg: DictConfig,
    train_cfg: DictConfig,
    eval_cfg: DictConfig,
    client: Any,
    champion: Any,
    report: RetrainReport,
) -> None:
    """Train the challenger, evaluate both models, decide and (maybe) promote."""
    from deepfakenet.pipeline import evaluate, train  # heavy: Lightning

    name = cfg.registry.model_name
    _, objects = train(_challenger_config(cfg, train_cfg, champion.version))
    challenger = objects["model_version"]
    report.challenger_version = str(challenger.version)
    report.challenger_run_id = objects["run_id"]
    client.set_tag(objects["run_id"], "mlflow.parentRunId", report.job_run_id)

    datamodule: DeepfakeDataModule = objects["datamodule"]
    held_out = datamodule.split_index("test")
    held_out = held_out[held_out["group"] == cfg.data.feedback_folder]
    for role, version in (("champion", champion.version), ("challenger", challenger.version)):
        metrics = dict(evaluate(_eval_config(cfg, eval_cfg, version, role))["metrics"])
        net, _ = registry.load_net(name, version)
        metrics["feedback_error"] = feedback_error(net, held_out)
        metrics["feedback_items"] = float(len(held_out))
        setattr(report, f"{role}_metrics", metrics)

    promote, report.reasons = decide(
        report.champion_metrics, report.challenger_metrics, cfg.promotion
    )
    report.status = "promoted" if promote else "kept"
    _log_job(client, report)  # the decision is on record before anything changes
    if promote:
        registry.promote(client, name, challenger.version)  # the last change to the registry
    log.info("challenger v%s %s: %s", challenger.version, report.status, report.reasons)


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


def _eval_config(cfg: DictConfig, eval_cfg: DictConfig, version: str, role: str) -> DictConfig:
    out = eval_cfg.copy()
    with open_dict(out):
        out.paths = cfg.paths
        out.registry = cfg.registry
        out.model_ref = str(version)
        out.report_dir = str(Path(cfg.report_dir) / role)
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
        log.info("service at %s now serves %s", url, response.json().get("model_version"))
    except Exception as err:  # the alias already moved; the service will poll or restart
        log.warning("could not notify the service at %s: %s", url, err)


def _log_job(client: Any, report: RetrainReport) -> None:
    run_id = report.job_run_id
    client.set_tag(run_id, registry.DECISION_TAG, report.status)
    client.set_tag(run_id, f"{registry.RETRAIN_TAG}.challenger_version", report.challenger_version)
    client.set_tag(run_id, f"{registry.RETRAIN_TAG}.new_labels", str(report.new_labels))
    for role in ("champion", "challenger"):
        for key, value in getattr(report, f"{role}_metrics").items():
            if value is not None:
                client.log_metric(run_id, f"retrain/{role}_{key}", float(value))
    client.log_text(run_id, json.dumps(asdict(report), indent=2), "retrain/report.json")


def _finish(cfg: DictConfig, report: RetrainReport) -> RetrainReport:
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    return report
