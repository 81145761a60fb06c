"""From a federated head to a registered model version, and the heads it is compared with.

The server owns the champion (its backbone produced every site's vectors) and a validation set
of its own. After the rounds it puts the aggregated head on the champion's backbone, refits the
calibration (temperature, offset, threshold) on its validation vectors, and registers the result
as a new version tagged ``deepfakenet.federated=true``. It never moves an alias: a federated
version becomes the champion only through the same promotion gate as a retrained one
(``python training/retrain.py challenger=<version>``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from torch import nn

from deepfakenet import registry
from deepfakenet.calibration import CalibrationConfig, calibrate
from deepfakenet.federated.head import HeadTraining, head_logits, make_head, train_head
from deepfakenet.metrics import defined_metrics
from deepfakenet.models.net import DeepfakeNet, calibrated_prob

log = logging.getLogger(__name__)

#: Version tag of every federated model version (and its prefix for the details).
FEDERATED_TAG = "deepfakenet.federated"
#: Environment variable of the SuperLink (and so of the ServerApp): its settings file.
SERVER_SETTINGS_ENV = "DEEPFAKENET_FEDERATED_SERVER"
#: Version tags copied from the base version: the data and code the backbone came from.
LINEAGE_TAGS = ("data_version", "git_commit")


@dataclass(frozen=True)
class ServerSettings:
    """What only the server knows: never in the run config, which Flower sends to every site.

    Attributes:
        tracking_uri: The MLflow registry (may carry a password).
        model_name: Registered model name.
        experiment_name: Experiment of the federated run.
        artifact_location: Artifact root for a new experiment in a local store.
        server_val: The server's validation vectors (``server_val.npz``) for calibration.
        out_dir: Where the ServerApp writes ``result.json``, ``head.npz``, ``received/``.
        record_received: Keep every reply the server receives (an audit of what left sites).
        calibration: Fields of :class:`CalibrationConfig` (``conf/calibration``).
    """

    tracking_uri: str
    model_name: str
    experiment_name: str
    server_val: str
    out_dir: str
    artifact_location: str | None = None
    record_received: bool = False
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def calibration_config(self) -> CalibrationConfig:
        """The calibration rule the server applies."""
        return CalibrationConfig(**self.calibration)

    def write(self, path: Path) -> Path:
        """Save as JSON (owner-readable only: the URI may hold a password)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)
        return path

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Read the file named by ``$DEEPFAKENET_FEDERATED_SERVER``."""
        path = os.environ.get(SERVER_SETTINGS_ENV)
        if not path:
            raise RuntimeError(f"{SERVER_SETTINGS_ENV} is not set: the ServerApp has no settings")
        settings = cls(**json.loads(Path(path).read_text()))
        if not Path(settings.server_val).is_file():
            raise FileNotFoundError(f"server_val {settings.server_val} does not exist")
        return settings


def with_head(champion: DeepfakeNet, head: nn.Module) -> DeepfakeNet:
    """A copy of ``champion`` whose final layer is ``head`` (backbone and filter unchanged)."""
    net = copy.deepcopy(champion).cpu().eval()
    net.backbone.fc = copy.deepcopy(head).cpu().eval()
    return net


def head_metrics(
    head: nn.Module, features: np.ndarray, targets: np.ndarray, net: DeepfakeNet | None = None
) -> dict[str, float | None]:
    """Test metrics of ``head`` on vectors: with ``net``'s calibration, else the plain softmax.

    AUROC and AP depend on the logits only; accuracy, F1 and ECE on the calibration too.
    """
    logits = head_logits(head, features)
    if net is None:
        prob, threshold = calibrated_prob(logits, 1.0, 0.0), 0.5
    else:
        prob, threshold = net.prob_from_logits(logits), float(net.threshold)
    return defined_metrics(prob, torch.as_tensor(targets), threshold)


def calibrated(
    champion: DeepfakeNet,
    head: nn.Module,
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: CalibrationConfig | None = None,
) -> tuple[DeepfakeNet, dict[str, float]]:
    """The champion with ``head``, calibrated on the server's validation vectors.

    Returns:
        The network and the calibration's metrics (``calibration/*``).
    """
    features, targets, sources = val
    net = with_head(champion, head)
    result = calibrate(
        net,
        head_logits(head, features),
        torch.as_tensor(targets),
        config,
        sources=[str(s) for s in sources],
    )
    return net, result.as_metrics()


def register_federated(
    net: DeepfakeNet,
    settings: ServerSettings,
    base: ModelVersion,
    params: Mapping[str, Any],
    metrics: Mapping[str, float | None],
    tags: Mapping[str, str],
) -> ModelVersion:
    """Log ``net`` in a run of its own and register it (tagged federated; no alias is moved).

    The version is created with its tags in one call (:func:`registry.log_and_register`), so a
    server that dies on the way leaves at most a FAILED run, never an untagged version. The
    base version's lineage tags (data version, git commit) are carried over: the backbone, and
    with it everything but the head, comes from there.
    """
    client = mlflow.MlflowClient()
    experiment = registry.experiment_id(
        client, settings.experiment_name, settings.artifact_location
    )
    version_tags = {
        **{k: v for k, v in (base.tags or {}).items() if k in LINEAGE_TAGS},
        FEDERATED_TAG: "true",
        **{f"{FEDERATED_TAG}.{k}": v for k, v in tags.items()},
    }
    with mlflow.start_run(experiment_id=experiment, run_name="federated") as run:
        mlflow.set_tags({FEDERATED_TAG: "true", **version_tags})
        mlflow.log_params(dict(params))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        version = registry.log_and_register(net, settings.model_name, tags=version_tags)
        log.info("registered federated v%s (run %s)", version.version, run.info.run_id)
    return version


def baseline_heads(
    champion_fc: nn.Linear,
    kind: str,
    sites: Sequence[tuple[np.ndarray, np.ndarray]],
    training: HeadTraining,
    rounds: int,
    hidden: int = 64,
) -> dict[str, nn.Module]:
    """The heads the federated one is measured against: central (the union) and each site's.

    Each trains the same total number of epochs as a site does over all rounds, from the same
    start (the champion's final layer), so the only difference is which rows it sees.
    """
    long = replace(training, epochs=training.epochs * rounds)
    heads: dict[str, nn.Module] = {}
    pooled = [(f, y) for f, y in sites if len(y)]
    if pooled:
        central = make_head(kind, champion_fc, hidden)
        train_head(
            central,
            np.concatenate([f for f, _ in pooled]),
            np.concatenate([y for _, y in pooled]),
            long,
        )
        heads["central"] = central
    for k, (features, labels) in enumerate(sites):
        if len(labels):
            local = make_head(kind, champion_fc, hidden)
            train_head(local, features, labels, long)
            heads[f"site-{k}"] = local
    return heads
