"""The video rule of a model version (``python training/video.py``, ``make video-eval``).

Chooses and measures how a registered image model judges a clip: frames sampled by the service's
decoder (:func:`deepfakenet.video.sample_frames`), each scored through THE image path
(``preprocess`` + ``score_batch``), the clip scored by a quantile of its frame probabilities
(:func:`deepfakenet.video.clip_score`).

1. Clips (real, fake, spliced; H.264 and MPEG-4 at several qualities) are made from the data
   tree's *validation* images and, separately, from its *test* images
   (:mod:`deepfakenet.data.clips`). The split is by photo, so no image (nor photo) is on both sides.
2. On the validation clips, each quantile of ``quantiles`` gets the threshold of highest balanced
   accuracy (the same as Youden's J); the best pair is the rule (:func:`~deepfakenet.video.
   choose_rule`). Fake and spliced clips are the positives.
3. On the test clips, the rule is reported: clip AUROC, accuracy and balanced accuracy at the
   threshold, recall per kind, the localisation rate (share of spliced clips whose most suspicious
   sampled frame lies inside the fake segment), per codec/quality and the decode time per clip.

The report goes to ``report_file`` (JSON, in the Hydra run folder) and to an MLflow run of
``experiment_name`` tagged with the model version. The rule is set on the model version itself
(tags :data:`deepfakenet.registry.VIDEO_QUANTILE_TAG` / ``VIDEO_THRESHOLD_TAG``): the service
reads it with the version (:func:`deepfakenet.registry.version_labels`), so a new champion brings
its own rule. ``DEEPFAKENET_VIDEO_QUANTILE`` / ``_THRESHOLD`` override it.

Exit codes (:mod:`deepfakenet.cli`): 0 done; 2 refused with one line (nothing registered under
``model_ref``, a data tree without a class in its validation or test split, a bad setting);
1 unexpected error, with its traceback.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deepfakenet import registry
from deepfakenet.data.clips import ClipSpec, make_clips
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.errors import ConfigError, DatasetError
from deepfakenet.evaluation import to_markdown
from deepfakenet.inference import score_batch
from deepfakenet.labels import FAKE_LABEL, REAL_LABEL
from deepfakenet.lineage import data_version
from deepfakenet.metrics import defined_metrics
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.preprocessing import preprocess
from deepfakenet.video import (
    ClipRule,
    VideoLimits,
    auroc,
    balanced_accuracy,
    choose_rule,
    clip_score,
    peak_time,
    sample_frames,
)

log = logging.getLogger(__name__)

#: Run tag of this job's MLflow runs.
VIDEO_TAG = "deepfakenet.video"


@dataclass
class ScoredClip:
    """A clip as the service would see it: its sampled frames' probabilities and times."""

    spec: ClipSpec
    probs: np.ndarray
    times: list[float]
    decoded_frames: int
    decode_s: float
    score_s: float

    def frame_labels(self) -> list[int]:
        """The true class (1 = fake) of the image each sampled frame shows."""
        last = len(self.spec.labels) - 1
        return [
            int(self.spec.labels[min(last, int(t / self.spec.seconds_per_image + 1e-6))] == "fake")
            for t in self.times
        ]

    def localised(self) -> bool | None:
        """Whether the timeline's peak is inside the fake segment (None: not a spliced clip)."""
        if self.spec.fake_span is None:
            return None
        start, end = self.spec.fake_span
        return start - 1e-6 <= peak_time(self.probs, self.times) < end - 1e-6


def _limits(cfg: DictConfig) -> VideoLimits:
    try:
        return VideoLimits(**OmegaConf.to_container(cfg.sampling, resolve=True))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid sampling settings: {err}") from err


def _quantiles(cfg: DictConfig) -> list[float]:
    quantiles = [float(q) for q in cfg.quantiles]
    if not quantiles or not all(0.0 <= q <= 1.0 for q in quantiles):
        raise ConfigError(
            f"quantiles must be a non-empty list of values in [0, 1], got {quantiles}"
        )
    if int(cfg.clips.n_per_kind) < 1:
        raise ConfigError(f"clips.n_per_kind must be >= 1, got {cfg.clips.n_per_kind}")
    return quantiles


def _split_images(rows: pd.DataFrame, split: str) -> tuple[list[Path], list[Path]]:
    """Real and fake image paths of one split; refused when a class is missing."""
    real = [Path(p) for p in rows.loc[rows["label"] == REAL_LABEL, "path"]]
    fake = [Path(p) for p in rows.loc[rows["label"] == FAKE_LABEL, "path"]]
    if not real or not fake:
        raise DatasetError(
            f"the {split} split has {len(real)} real and {len(fake)} fake images: clips need both"
        )
    return real, fake


def _progress(enabled: bool) -> Progress:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, disable=not enabled, transient=True)


@torch.inference_mode()
def score_clips(
    net: DeepfakeNet,
    clips: list[tuple[ClipSpec, bytes]],
    limits: VideoLimits,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "scoring clips",
) -> list[ScoredClip]:
    """Decode each clip as the service does and score its sampled frames (THE image path)."""
    scored = []
    with _progress(progress) as bar:
        task = bar.add_task(desc, total=len(clips))
        for spec, data in clips:
            start = time.perf_counter()
            sampled = sample_frames(data, limits)
            decoded = time.perf_counter()
            probs = [
                score_batch(net, preprocess(sampled.frames[i : i + batch_size], net.crop_size))
                .prob_fake.numpy()
                .astype(np.float64)
                for i in range(0, len(sampled.frames), batch_size)
            ]
            scored.append(
                ScoredClip(
                    spec=spec,
                    probs=np.concatenate(probs),
                    times=list(sampled.times),
                    decoded_frames=sampled.decoded_frames,
                    decode_s=decoded - start,
                    score_s=time.perf_counter() - decoded,
                )
            )
            bar.advance(task)
    return scored


def _clip_metrics(scored: list[ScoredClip], rule: ClipRule) -> dict[str, Any]:
    """The rule's clip-level figures on ``scored`` (null where undefined)."""
    scores = np.array([clip_score(c.probs, rule.quantile) for c in scored])
    targets = np.array([c.spec.target for c in scored])
    metrics: dict[str, Any] = defined_metrics(
        torch.from_numpy(scores).float(), torch.from_numpy(targets), rule.threshold
    )
    # The clip score is a quantile of frame probabilities, not a calibrated clip probability.
    metrics.pop("ece", None)
    metrics["balanced_acc"] = balanced_accuracy(scores, targets, rule.threshold)
    real = np.array([c.spec.kind == "real" for c in scored])
    for kind in ("fake", "spliced"):  # each kind of positive against the real clips alone
        mask = real | np.array([c.spec.kind == kind for c in scored])
        metrics[f"auroc_{kind}"] = auroc(scores[mask], targets[mask])
    flagged = scores >= rule.threshold
    metrics["flagged_any"] = float(flagged.mean())
    for kind in ("real", "fake", "spliced"):
        mask = np.array([c.spec.kind == kind for c in scored])
        metrics[f"flagged_{kind}"] = float(flagged[mask].mean()) if mask.any() else None
    localised = [c.localised() for c in scored if c.spec.kind == "spliced"]
    metrics["localisation"] = float(np.mean(localised)) if localised else None
    frame_probs = np.concatenate([c.probs for c in scored])
    frame_labels = np.concatenate([c.frame_labels() for c in scored])
    metrics["frame_auroc"] = auroc(frame_probs, frame_labels)
    metrics["n_clips"] = len(scored)
    metrics["n_frames"] = len(frame_probs)
    return {
        k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in metrics.items()
    }


def _breakdown(scored: list[ScoredClip], rule: ClipRule, by: str) -> pd.DataFrame:
    """Clip figures per codec/quality (``by="condition"``) or per clip kind (``by="kind"``)."""
    rows = []
    keys = sorted({getattr(c.spec, by) for c in scored})
    for key in keys:
        group = [c for c in scored if getattr(c.spec, by) == key]
        m = _clip_metrics(group, rule)
        rows.append(
            {
                by: key,
                "clips": len(group),
                "auroc": m["auroc"],
                "acc": m["acc"],
                "flagged": m["flagged_any"],
                "localisation": m["localisation"],
                "frame_auroc": m["frame_auroc"],
            }
        )
    # NaN where a figure does not apply (shown as "-"; null in the JSON report).
    return pd.DataFrame([{k: np.nan if v is None else v for k, v in r.items()} for r in rows])


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in row.items()}
        for row in table.to_dict(orient="records")
    ]


def _image_auroc(net: DeepfakeNet, scored: list[ScoredClip], batch_size: int) -> float | None:
    """AUROC of the test clips' images scored as images (what compression costs, by contrast)."""
    from deepfakenet.imaging import load_image_file

    pairs = sorted(
        {(p, label) for c in scored for p, label in zip(c.spec.images, c.spec.labels, strict=True)}
    )
    probs = []
    for i in range(0, len(pairs), batch_size):
        images = [load_image_file(p) for p, _ in pairs[i : i + batch_size]]
        probs.append(score_batch(net, preprocess(images, net.crop_size)).prob_fake.numpy())
    value = auroc(np.concatenate(probs), [int(label == FAKE_LABEL) for _, label in pairs])
    return value if np.isfinite(value) else None


def run_video(cfg: DictConfig) -> dict[str, Any]:
    """Choose the clip rule on validation clips, report it on test clips; see the module."""
    start = time.perf_counter()
    limits, quantiles = _limits(cfg), _quantiles(cfg)
    client = registry.use(registry.registry_config(cfg))
    net, version = registry.load_net(cfg.registry.model_name, cfg.model_ref)
    torch.manual_seed(int(cfg.seed))
    datamodule: DeepfakeDataModule = hydra.utils.instantiate(cfg.data, eval_crop_size=net.crop_size)
    datamodule.setup("test")
    val_real, val_fake = _split_images(datamodule.split_index("val"), "val")
    test_real, test_fake = _split_images(datamodule.split_index("test"), "test")
    overlap = set(val_real + val_fake) & set(test_real + test_fake)
    if overlap:  # the split is by photo hash: this would be a bug, not a user's mistake
        raise RuntimeError(f"{len(overlap)} images are in both the val and the test split")

    clip_args = dict(
        n_per_kind=int(cfg.clips.n_per_kind),
        codecs=list(cfg.clips.codecs),
        qualities={k: [int(q) for q in v] for k, v in cfg.clips.qualities.items()},
        seconds_per_image=float(cfg.clips.seconds_per_image),
        fps=float(cfg.clips.fps),
        images_per_clip=int(cfg.clips.images_per_clip),
        size=tuple(int(s) for s in cfg.clips.size),
        progress=bool(cfg.progress),
    )
    seed = int(cfg.seed)
    val_clips = make_clips(val_real, val_fake, seed=seed, **clip_args)
    test_clips = make_clips(test_real, test_fake, seed=seed + 1, **clip_args)
    batch_size, progress = int(cfg.batch_size), bool(cfg.progress)
    val = score_clips(net, val_clips, limits, batch_size, progress, "scoring val clips")
    test = score_clips(net, test_clips, limits, batch_size, progress, "scoring test clips")

    rule = choose_rule([c.probs for c in val], [c.spec.target for c in val], quantiles)
    grid = [
        asdict(choose_rule([c.probs for c in val], [c.spec.target for c in val], [q]))
        for q in quantiles
    ]
    metrics = _clip_metrics(test, rule)
    by_condition = _breakdown(test, rule, "condition")
    by_kind = _breakdown(test, rule, "kind")
    decode_s = np.array([c.decode_s for c in val + test])
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "model": registry.model_uri(cfg.registry.model_name, version.version),
        "model_ref": str(cfg.model_ref),
        "model_version": str(version.version),
        "run_id": version.run_id,
        "data_version": data_version(cfg.paths.dvc_file),
        "crop_size": int(net.crop_size),
        "image_threshold": float(net.threshold),
        "sampling": asdict(limits),
        "clips": {k: (list(v) if isinstance(v, tuple) else v) for k, v in clip_args.items()},
        "rule": asdict(rule),
        "grid": grid,
        "test": metrics,
        "test_image_auroc": _image_auroc(net, test, batch_size),
        "val": _clip_metrics(val, rule),
        "by_condition": _records(by_condition),
        "by_kind": _records(by_kind),
        "decode_s": {
            "mean": float(decode_s.mean()),
            "max": float(decode_s.max()),
            "frames_decoded_mean": float(np.mean([c.decoded_frames for c in val + test])),
        },
        "seconds": seconds,
        "settings": {
            "DEEPFAKENET_VIDEO_QUANTILE": rule.quantile,
            "DEEPFAKENET_VIDEO_THRESHOLD": round(rule.threshold, 6),
            "DEEPFAKENET_VIDEO_SAMPLE_FPS": limits.sample_fps,
            "DEEPFAKENET_VIDEO_MAX_SAMPLES": limits.max_samples,
        },
    }
    markdown = to_markdown(by_condition) + "\n" + to_markdown(by_kind)
    report["mlflow_run_id"] = _log_run(cfg, client, report, markdown)
    registry.set_video_rule(
        client, cfg.registry.model_name, version.version, rule.quantile, rule.threshold
    )
    out = Path(cfg.report_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True))
    log.info("video rule chosen on %d val clips: %s", len(val), rule)
    log.info("test clips (%d): %s", len(test), json.dumps(metrics, indent=2))
    log.info("per codec/quality and per kind:\n%s", markdown)
    log.info("report written to %s (%.0f s)", out, seconds)
    log.info(
        "the rule is tagged on version %s (the service reads it from there); to override it: "
        "DEEPFAKENET_VIDEO_QUANTILE=%s DEEPFAKENET_VIDEO_THRESHOLD=%s",
        version.version,
        report["settings"]["DEEPFAKENET_VIDEO_QUANTILE"],
        report["settings"]["DEEPFAKENET_VIDEO_THRESHOLD"],
    )
    return report


def _log_run(cfg: DictConfig, client: Any, report: dict[str, Any], markdown: str) -> str:
    """One MLflow run in ``cfg.experiment_name``, tagged with the model version it judged."""
    registry.experiment_id(client, cfg.experiment_name, cfg.registry.artifact_location)
    mlflow.set_experiment(cfg.experiment_name)
    with mlflow.start_run(run_name="video") as run:
        mlflow.set_tags(
            {
                VIDEO_TAG: "true",
                "model_name": cfg.registry.model_name,
                "model_version": report["model_version"],
                "model_ref": report["model_ref"],
                "data_version": report["data_version"],
            }
        )
        params = {f"sampling/{k}": v for k, v in report["sampling"].items()}
        params |= {f"clips/{k}": v for k, v in report["clips"].items() if k != "progress"}
        params |= {"quantiles": ",".join(map(str, cfg.quantiles)), "seed": cfg.seed}
        params |= {"rule/quantile": report["rule"]["quantile"]}
        mlflow.log_params(params)
        metrics = {f"video/test/{k}": v for k, v in report["test"].items() if v is not None}
        metrics |= {
            "video/rule/threshold": report["rule"]["threshold"],
            "video/rule/quantile": report["rule"]["quantile"],
            "video/val/balanced_acc": report["rule"]["balanced_accuracy"],
            "video/decode_s_mean": report["decode_s"]["mean"],
            "video/seconds": report["seconds"],
        }
        for row in report["by_condition"]:
            for key in ("auroc", "acc", "localisation"):
                if row[key] is not None:
                    metrics[f"video/test/{row['condition']}/{key}"] = row[key]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_text(json.dumps(report, indent=2, sort_keys=True), "video/video.json")
        mlflow.log_text(markdown, "video/video.md")
        return str(run.info.run_id)
