"""The jobs behind ``training/``: train (and register) a detector, evaluate a registered one.

Entry points stay thin (``@hydra.main`` + one call); everything here takes a composed config and
returns plain results, so tests run the real jobs without going through the CLI.
"""

from __future__ import annotations

import json
import logging
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
from omegaconf import DictConfig, OmegaConf

from deepfakenet import registry
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.inference import predict_loader
from deepfakenet.lineage import data_version, git_commit
from deepfakenet.metrics import compute_metrics
from deepfakenet.models.module import DetectorModule
from deepfakenet.plots import evaluation_figures

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers)."""
    items = []
    for name, conf in (group or {}).items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("instantiating %s %s <%s>", kind, name, conf._target_)
            items.append(hydra.utils.instantiate(conf))
    return items


def registry_config(cfg: DictConfig) -> registry.RegistryConfig:
    """The registry settings of a composed config."""
    return registry.RegistryConfig(**OmegaConf.to_container(cfg.registry, resolve=True))


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
    params = _flat_params(cfg)
    params["model/params_total"] = sum(p.numel() for p in model.parameters())
    logger.log_hyperparams(params)
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "data_version", lineage["data_version"])
    client.set_tag(run_id, "mlflow.source.git.commit", lineage["git_commit"])
    for tag in cfg.get("tags") or []:
        client.set_tag(run_id, f"tag.{tag}", "true")
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
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


def _write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


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
    client = registry.use(registry_config(cfg))

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: DeepfakeDataModule = hydra.utils.instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model: DetectorModule = hydra.utils.instantiate(cfg.model)
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"), "callback")
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"), "logger")
    mlflow_logger = next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)
    if mlflow_logger is None:
        raise ValueError("training needs the MLflow logger (logger=mlflow): runs are tracked there")
    log.info("instantiating trainer <%s>", cfg.trainer._target_)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    lineage = _log_run_context(mlflow_logger, cfg, datamodule, model)
    log.info(
        "training; MLflow run %s, data version %s", mlflow_logger.run_id, lineage["data_version"]
    )
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    log.info("testing %s", best or "the last weights")
    trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    objects: dict[str, Any] = {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "trainer": trainer,
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
                model.net, cfg.registry.model_name, tags={**lineage, "run_id": mlflow_logger.run_id}
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
                "metrics": metrics,
            },
        )
    return metrics, objects


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a registered model (alias or version) on the test split of the data tree.

    Writes ``metrics.json`` and the figures to ``cfg.report_dir``.

    Args:
        cfg: A composed ``conf/evaluate.yaml``.

    Returns:
        The report: model reference and version, data version, sample count and metrics.
    """
    registry.use(registry_config(cfg))
    net, version = registry.load_net(cfg.registry.model_name, cfg.model_ref)
    datamodule: DeepfakeDataModule = hydra.utils.instantiate(cfg.data, crop_size=net.crop_size)
    datamodule.setup("test")
    logits, targets = predict_loader(net, datamodule.test_dataloader())
    prob = net.prob_from_logits(logits)
    threshold = float(net.threshold)
    report = {
        "model": registry.model_uri(cfg.registry.model_name, version.version),
        "model_ref": str(cfg.model_ref),
        "model_version": version.version,
        "run_id": version.run_id,
        "data_version": data_version(cfg.paths.dvc_file),
        "split": "test",
        "n_samples": len(targets),
        "threshold": threshold,
        "temperature": float(net.temperature),
        "metrics": compute_metrics(prob, targets, threshold),
    }
    out = Path(cfg.report_dir)
    _write_json(out / "metrics.json", report)
    for name, fig in evaluation_figures(prob.numpy(), targets.numpy(), threshold).items():
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
    log.info("evaluation of %s written to %s: %s", report["model"], out, report["metrics"])
    return report
