"""The jobs behind ``training/``: train (and register) a detector, evaluate a registered one.

Entry points stay thin (``@hydra.main`` + one call); everything here takes a composed config and
returns plain results, so tests run the real jobs without going through the CLI.

Scoring a split (cells, per-group rates, robustness tables) is :mod:`deepfakenet.evaluation`'s;
this module never imports :mod:`deepfakenet.protocol`, which builds on it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.strategies import ParallelStrategy
from omegaconf import DictConfig, OmegaConf

from deepfakenet import registry
from deepfakenet.calibration import (
    CalibrationConfig,
    CalibrationResult,
    calibrate,
    calibrated_prob,
)
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.errors import ConfigError
from deepfakenet.evaluation import (
    ProtocolSettings,
    RobustnessTables,
    group_rates,
    score_conditions,
    to_markdown,
)
from deepfakenet.inference import predict_loader
from deepfakenet.labels import LABELS
from deepfakenet.lineage import data_version, git_commit
from deepfakenet.metrics import defined_metrics
from deepfakenet.models.module import DetectorModule
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.plots import evaluation_figures, reliability_figure
from deepfakenet.security import redact

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers)."""
    items = []
    for name, conf in (group or {}).items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("instantiating %s %s <%s>", kind, name, conf._target_)
            items.append(hydra.utils.instantiate(conf))
    return items


def _flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to ``group/key`` params (Hydra's own node left out)."""
    container = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in cfg
        if key != "hydra"
    }
    return pd.json_normalize(container, sep="/").iloc[0].to_dict()


def _log_run_context(
    logger: MLFlowLogger, cfg: DictConfig, datamodule: DeepfakeDataModule, model: DetectorModule
) -> dict[str, str]:
    """Log params, lineage tags, the data index as an MLflow input and the config file."""
    lineage = {
        "data_version": data_version(cfg.paths.dvc_file),
        "git_commit": git_commit(cfg.paths.root_dir) or "unknown",
    }
    # A store or registry URL may carry a password: params and the config copy never do.
    params = {k: redact(v) if isinstance(v, str) else v for k, v in _flat_params(cfg).items()}
    params["model/params_total"] = sum(p.numel() for p in model.parameters())
    logger.log_hyperparams(params)
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "data_version", lineage["data_version"])
    client.set_tag(run_id, "mlflow.source.git.commit", lineage["git_commit"])
    for tag in cfg.get("tags") or []:
        client.set_tag(run_id, f"tag.{tag}", "true")
    client.log_text(run_id, redact(OmegaConf.to_yaml(cfg, resolve=True)), "config/config.yaml")
    datamodule.setup()
    index = datamodule.index
    with mlflow.start_run(run_id=run_id):
        dataset = mlflow.data.from_pandas(
            index.drop(columns=["path"]),
            source=str(datamodule.data_dir),
            name="deepfakenet-data",
            digest=lineage["data_version"][:36],
        )
        mlflow.log_input(dataset, context="training")
    return lineage


#: Default least number of test images per class before a split is called small.
MIN_TEST_PER_CLASS = 30
#: Run tag set on every training run: "true" when a split is below the per-class minimum.
SMALL_SPLIT_TAG = "deepfakenet.small_split"


def class_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Images per class (``real``, ``fake``) in index rows of the data tree."""
    counts = rows["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in LABELS}


def small_split_note(counts: dict[str, float], min_per_class: int, what: str) -> str | None:
    """A warning when ``counts`` (images per class) is below ``min_per_class``, else None.

    A metric over a handful of images of one class is mostly noise (one real image makes the
    false-positive rate 0 or 1), so the number it rests on has to travel with it.
    """
    low = {label: int(n) for label, n in counts.items() if n < min_per_class}
    if not low:
        return None
    shown = ", ".join(f"{int(n)} {label}" for label, n in counts.items())
    return (
        f"small {what}: {shown} (fewer than min_test_per_class={min_per_class} for "
        f"{', '.join(low)}); its metrics rest on too few images to mean much"
    )


def _split_counts(datamodule: DeepfakeDataModule) -> dict[str, dict[str, int]]:
    """Images per class in each split (excluded groups left out of train and val)."""
    return {
        split: class_counts(datamodule.split_index(split)) for split in ("train", "val", "test")
    }


def _write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def _calibrate(
    cfg: DictConfig,
    model: DetectorModule,
    datamodule: DeepfakeDataModule,
    mlflow_logger: MLFlowLogger,
) -> CalibrationResult:
    """Fit temperature, offset and threshold on the validation split; log metrics and figures.

    Runs on the best weights, before testing and registration, so the test metrics and the
    registered model both use the calibrated probability and the chosen threshold.
    """
    config: CalibrationConfig = (
        hydra.utils.instantiate(cfg.calibration) if cfg.get("calibration") else CalibrationConfig()
    )
    logits, targets = predict_loader(model.net, datamodule.val_dataloader())
    # The loader keeps the index order, so row i of the split is logit i. In a tree with a
    # manifest, only the photo sources it lists count as sources: feedback images added later
    # (unlisted) are the hardest cases people sent back, not a source to calibrate for.
    rows = datamodule.split_index("val")
    listed = rows["photo"] != ""
    sources = rows["source"].where(listed, "") if listed.any() else rows["source"]
    result = calibrate(model.net, logits, targets, config, sources=sources.tolist())
    mlflow_logger.log_metrics(result.as_metrics())
    prob_before = calibrated_prob(logits).numpy()
    prob_after = model.net.prob_from_logits(logits).numpy()
    with mlflow.start_run(run_id=mlflow_logger.run_id):
        for stage, prob, ece in (
            ("before", prob_before, result.ece_before),
            ("after", prob_after, result.ece_after),
        ):
            title = f"Validation, {stage} scaling (ECE {ece:.3f})"
            fig = reliability_figure(prob, targets.numpy(), title=title)
            mlflow.log_figure(fig, f"plots/val_reliability_{stage}.png")
            plt.close(fig)
    return result


def _check_warm_start(source: DeepfakeNet, target: DeepfakeNet) -> None:
    """Refuse weights learnt on another input: the state dicts match, the meaning does not.

    The input filter has no parameters, so a plain-stem champion's weights would load into a
    high-pass challenger without error and be fine-tuned on inputs they were never trained on.
    """
    filters = type(source.input_filter).__name__, type(target.input_filter).__name__
    if filters[0] != filters[1]:
        raise ConfigError(
            f"init_from: the source model's input filter is {filters[0]}, this recipe's is "
            f"{filters[1]}; train from scratch (init_from=null) or match model.net.input_filter"
        )


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train, test, log and (optionally) register a detector.

    Args:
        cfg: A composed ``conf/train.yaml``.

    Returns:
        ``(metrics, objects)``: the logged metrics (train/val/test) and the objects built (cfg,
        datamodule, model, trainer, logger, and the registered ``model_version`` if any).
    """
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    client = registry.use(registry.registry_config(cfg))

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: DeepfakeDataModule = hydra.utils.instantiate(cfg.data)
    # Scan the tree before anything is created: a missing class or an empty tree is a
    # DatasetError (exit 2) that leaves no MLflow run behind.
    datamodule.setup()
    counts = _split_counts(datamodule)
    min_per_class = int(cfg.get("min_test_per_class", MIN_TEST_PER_CLASS))
    notes = [
        note
        for split in ("val", "test")
        if (note := small_split_note(counts[split], min_per_class, f"{split} split"))
    ]
    for note in notes:
        log.warning("%s", note)
    log.info("instantiating model <%s>", cfg.model._target_)
    model: DetectorModule = hydra.utils.instantiate(cfg.model)
    if cfg.get("init_from") is not None:
        # Warm start (the retraining loop's challenger): every weight of a registered version;
        # temperature and threshold are refitted after training anyway.
        source, _ = registry.load_net(cfg.registry.model_name, cfg.init_from)
        _check_warm_start(source, model.net)
        model.net.load_state_dict(source.state_dict())
        log.info("initialised from %s", registry.model_uri(cfg.registry.model_name, cfg.init_from))
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"), "callback")
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"), "logger")
    mlflow_logger = next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)
    if mlflow_logger is None:
        raise ValueError("training needs the MLflow logger (logger=mlflow): runs are tracked there")
    log.info("instantiating trainer <%s>", cfg.trainer._target_)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    try:
        return _train_logged(cfg, client, datamodule, model, trainer, mlflow_logger, counts, notes)
    except BaseException:
        _fail_run(mlflow_logger)
        raise


def _fail_run(logger: MLFlowLogger) -> None:
    """Mark the training run FAILED (a failed job never leaves a RUNNING run behind)."""
    run_id = getattr(logger, "_run_id", None)  # None: the run was never created
    if run_id is None:
        return
    try:
        logger.experiment.set_terminated(run_id, status="FAILED")
    except Exception:
        log.exception("could not mark the MLflow run %s as FAILED", run_id)


def _train_logged(
    cfg: DictConfig,
    client: Any,
    datamodule: DeepfakeDataModule,
    model: DetectorModule,
    trainer: L.Trainer,
    mlflow_logger: MLFlowLogger,
    counts: dict[str, dict[str, int]],
    notes: list[str],
) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`train` once its MLflow run exists: fit, calibrate, test, log, register.

    Under DDP every rank runs this function (Lightning's launcher starts the script once per
    process), but only ``fit`` is distributed. Rank 0 alone logs the run's context before it,
    and after it rank 0 alone calibrates, tests, exports and registers, on the whole splits:
    one MLflow run, one calibration, one registered version, whatever the number of processes.
    """
    # Lightning's DDP launcher lowers each process's intra-op threads to share the cores; rank 0
    # goes on alone after fit and gets them back.
    threads = torch.get_num_threads()
    if not trainer.is_global_zero:
        # The others train their share of each batch and stop there (their logger is Lightning's
        # rank-zero dummy, so nothing of theirs reaches MLflow).
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        _end_distributed()
        log.info("rank %d: fit done; rank 0 calibrates, tests and registers", trainer.global_rank)
        return {k: float(v) for k, v in trainer.callback_metrics.items()}, {"cfg": cfg}
    lineage = _log_run_context(mlflow_logger, cfg, datamodule, model)
    mlflow_logger.experiment.set_tag(
        mlflow_logger.run_id, SMALL_SPLIT_TAG, str(bool(notes)).lower()
    )
    for split, by_class in counts.items():
        for label, n in by_class.items():
            mlflow_logger.experiment.set_tag(
                mlflow_logger.run_id, f"deepfakenet.{split}_n_{label}", str(n)
            )
    if notes:
        mlflow_logger.experiment.set_tag(
            mlflow_logger.run_id, f"{SMALL_SPLIT_TAG}.note", " | ".join(notes)[:5000]
        )
    log.info(
        "training; MLflow run %s, data version %s", mlflow_logger.run_id, lineage["data_version"]
    )
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    _end_distributed()
    torch.set_num_threads(threads)

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        log.info("restoring the best weights from %s", best)
        checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
    calibration = _calibrate(cfg, model, datamodule, mlflow_logger)
    metrics.update(calibration.as_metrics())
    # No ckpt_path here: reloading the checkpoint would undo the calibration just stored in the
    # net's buffers, and the test metrics must be those of the model that gets registered.
    log.info("testing the calibrated model")
    tester = _single_process_trainer(cfg, trainer)
    tester.test(model=model, datamodule=datamodule)
    metrics.update({k: float(v) for k, v in tester.callback_metrics.items()})

    objects: dict[str, Any] = {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "trainer": trainer,
        "tester": tester,
        "logger": mlflow_logger,
        "run_id": mlflow_logger.run_id,
    }
    _, prob, targets = (torch.cat(t) for t in zip(*model.test_outputs, strict=True))
    with mlflow.start_run(run_id=mlflow_logger.run_id):
        for name, fig in evaluation_figures(
            prob.numpy(), targets.numpy(), float(model.net.threshold)
        ).items():
            mlflow.log_figure(fig, f"plots/test_{name}")
            plt.close(fig)
        if cfg.get("register", True):
            version = registry.log_and_register(
                model.net,
                cfg.registry.model_name,
                tags={**lineage, "run_id": mlflow_logger.run_id},
                extra_files=_export_artifacts(cfg, model.net, datamodule),
            )
            registry.promote_if_no_champion(client, cfg.registry.model_name, version.version)
            objects["model_version"] = version
    if cfg.get("metrics_file"):
        _write_json(
            cfg.metrics_file,
            {
                "run_id": mlflow_logger.run_id,
                "model_version": str(objects["model_version"].version)
                if "model_version" in objects
                else None,
                **lineage,
                "counts": counts,
                "small_split": bool(notes),
                "warnings": notes,
                "metrics": metrics,
            },
        )
    return metrics, objects


def trainer_processes(trainer_cfg: DictConfig) -> int | None:
    """How many processes a ``conf/trainer`` node starts (None: it depends on the host).

    ``devices`` as Lightning reads it: a count, a list of device ids, ``"0,1"`` (ids), ``-1``
    (every device) or ``auto``, which is one process on a CPU and every device elsewhere.
    """
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            count = 1 if trainer_cfg.get("accelerator") == "cpu" else None
        elif "," in text:
            count = len([part for part in text.split(",") if part.strip()])
        else:
            count = int(text) if text.lstrip("-").isdigit() else None
    elif OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        count = len(devices)
    else:
        count = int(devices)
    if count is None or count < 0:  # -1: every device of the host
        return None
    return count * int(trainer_cfg.get("num_nodes", 1) or 1)


def require_one_process(cfg: DictConfig, job: str) -> None:
    """Refuse a recipe on several processes for a job that trains inside a larger one.

    Lightning's DDP launcher starts the running script again for every extra process; when
    that script is a loop over trainings (retraining, the generalisation folds), each copy
    would run the whole loop. Such jobs train on one device; ``training/train.py trainer=ddp``
    is the distributed entry point.

    Raises:
        ConfigError: ``cfg.trainer`` starts (or may start) more than one process (exit 2).
    """
    trainer_cfg = cfg.get("trainer") or OmegaConf.create({})
    if trainer_processes(trainer_cfg) == 1:
        return
    raise ConfigError(
        f"{job} trains inside the job, in one process; trainer devices="
        f"{trainer_cfg.get('devices')} num_nodes={trainer_cfg.get('num_nodes', 1)} would start "
        "the whole job again in every extra process. Set trainer.devices=1 (distributed "
        "training: python training/train.py trainer=ddp)"
    )


def _end_distributed() -> None:
    """Dissolve the process group once ``fit`` is done (on every rank; a no-op without one).

    Lightning leaves it up until the process exits. Rank 0 goes on alone, and a torchmetrics
    metric computed while a group exists would wait for ranks that have gone.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _single_process_trainer(cfg: DictConfig, trainer: L.Trainer) -> L.Trainer:
    """The trainer that tests: ``trainer`` itself, or one process of the same recipe after DDP.

    Lightning's advice for distributed runs: a ``DistributedSampler`` pads the test split to a
    multiple of the world size by repeating images, so a distributed test scores some twice. One
    process on the same accelerator and precision scores each test image exactly once, into the
    same MLflow run.
    """
    if not isinstance(trainer.strategy, ParallelStrategy):
        return trainer
    return hydra.utils.instantiate(
        cfg.trainer,
        strategy="auto",
        devices=1,
        num_nodes=1,
        sync_batchnorm=False,
        use_distributed_sampler=False,
        callbacks=[],
        logger=trainer.loggers,
    )


#: Run tag saying whether the ONNX artifacts were built ("ok", "failed", "disabled").
EXPORT_TAG = "deepfakenet.export"


def _export_artifacts(
    cfg: DictConfig, net: DeepfakeNet, datamodule: DeepfakeDataModule
) -> list[Path]:
    """ONNX fp32, int8 and ``parity.json`` for registration (``cfg.export``); [] when off or failed.

    Called inside the training run: parity figures are logged as run metrics too. A failing
    export never loses the trained model: the error is logged and tagged, the version is
    registered without artifacts, and the service serves it with torch and says so.
    """
    export_cfg = cfg.get("export")
    if export_cfg is None or not export_cfg.get("enabled", True):
        mlflow.set_tag(EXPORT_TAG, "disabled")
        return []
    from deepfakenet.export import build_artifacts

    out_dir = Path(cfg.paths.output_dir) / "export"
    try:
        report = build_artifacts(net, datamodule, out_dir, export_cfg)
    except Exception as err:
        log.exception("ONNX export failed; registering the model without ONNX artifacts")
        mlflow.set_tag(EXPORT_TAG, "failed")
        mlflow.set_tag(f"{EXPORT_TAG}.error", f"{type(err).__name__}: {err}"[:5000])
        return []
    mlflow.set_tag(EXPORT_TAG, "ok")
    mlflow.log_metrics(report.metrics())
    return report.files


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a registered model (alias or version) on the test split of the data tree.

    Writes ``metrics.json``, ``per_group.{csv,md}`` and the figures to ``cfg.report_dir``. The
    report says how many images per class the metrics rest on (``counts``) and warns (log and
    ``warnings``) when a class has fewer than ``cfg.min_test_per_class``. ``per_group`` gives the
    decisions at the stored threshold per real source (false-positive rate) and per fake family
    (recall): the overall rates average away the one source or family that fails.

    Args:
        cfg: A composed ``conf/evaluate.yaml``.

    Returns:
        The report: model reference and version, data version, sample and class counts, small
        split warnings, metrics (null where undefined, e.g. AUROC of a one-class split), the
        per-group rates and, with ``cfg.robustness``, the robustness cells and their per-group
        rates.

    Raises:
        RegistryError: Nothing is registered under ``cfg.model_ref`` (exit 2).
    """
    registry.use(registry.registry_config(cfg))
    net, version = registry.load_net(cfg.registry.model_name, cfg.model_ref)
    # Scored at the side the model was registered with, whatever the data config says.
    datamodule: DeepfakeDataModule = hydra.utils.instantiate(cfg.data, eval_crop_size=net.crop_size)
    datamodule.setup("test")
    test_rows = datamodule.split_index("test")
    counts = class_counts(test_rows)
    min_per_class = int(cfg.get("min_test_per_class", MIN_TEST_PER_CLASS))
    warnings = [note] if (note := small_split_note(counts, min_per_class, "test split")) else []
    for warning in warnings:
        log.warning("%s", warning)
    # The test loader reads the split's rows in index order, so scores and groups line up.
    logits, targets = predict_loader(net, datamodule.test_dataloader())
    prob = net.prob_from_logits(logits)
    threshold = float(net.threshold)
    metrics = defined_metrics(prob, targets, threshold)
    by_group = group_rates(net, prob, targets, test_rows["group"].astype(str).tolist())
    if min(counts.values()) == 0:
        warnings.append("the test split lacks a class: AUROC, AP and F1 are undefined (null)")
    report = {
        "model": registry.model_uri(cfg.registry.model_name, version.version),
        "model_ref": str(cfg.model_ref),
        "model_version": version.version,
        "run_id": version.run_id,
        "data_version": data_version(cfg.paths.dvc_file),
        "split": "test",
        "n_samples": len(targets),
        # What the metrics rest on: images per class, and whether that is too few.
        "counts": counts,
        "min_test_per_class": min_per_class,
        "small_split": bool(warnings),
        "warnings": warnings,
        "threshold": threshold,
        "temperature": float(net.temperature),
        "logit_bias": float(net.logit_bias),
        "metrics": metrics,
        "per_group": _records(by_group),
    }
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_group.to_csv(out / "per_group.csv", index=False)
    (out / "per_group.md").write_text(to_markdown(by_group))
    if cfg.get("robustness"):
        tables = _robustness(cfg, net, datamodule)
        report["robustness"] = _records(tables.cells)
        report["robustness_groups"] = _records(tables.groups)
        tables.cells.to_csv(out / "robustness.csv", index=False)
        tables.groups.to_csv(out / "robustness_groups.csv", index=False)
        (out / "robustness.md").write_text(
            to_markdown(tables.cells) + "\n" + to_markdown(tables.groups)
        )
    _write_json(out / "metrics.json", report)
    for name, fig in evaluation_figures(prob.numpy(), targets.numpy(), threshold).items():
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
    log.info("evaluation of %s written to %s: %s", report["model"], out, report["metrics"])
    log.info("decisions at the threshold per source and family:\n%s", to_markdown(by_group))
    return report


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Table rows as JSON-ready dicts: NaN (a rate that does not apply) becomes null."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in table.to_dict(orient="records")
    ]


def _robustness(
    cfg: DictConfig, net: DeepfakeNet, datamodule: DeepfakeDataModule
) -> RobustnessTables:
    """The test split scored under each perturbation of ``cfg.protocol`` and on full images."""
    settings = ProtocolSettings.from_config(cfg.protocol)
    return score_conditions(
        net,
        datamodule.split_index("test"),
        settings.perturbations,
        full_image=settings.full_image,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
    )
