"""The one place that knows MLflow model names, aliases and how the detector is logged and loaded.

The detector is logged with ``mlflow.pytorch`` in the ``pickle`` format: the default ``pt2``
(torch.export) format loads back without module hooks, and Captum's Grad-CAM needs those hooks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
import mlflow.artifacts
import mlflow.pytorch
import numpy as np
import pandas as pd
import torch
import torchvision
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from deepfakenet.backends import PARITY_FILE, parity_tags
from deepfakenet.errors import RegistryError
from deepfakenet.models.net import DeepfakeNet

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
#: Not an MLflow alias: resolved here to the highest version number.
LATEST = "latest"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class RegistryConfig:
    """Where runs and models live (``conf/registry``).

    Attributes:
        tracking_uri: MLflow tracking and registry URI (sqlite file by default).
        artifact_location: Artifact root for a newly created experiment.
        experiment_name: Experiment that training runs go to.
        model_name: Registered model name.
    """

    tracking_uri: str
    artifact_location: str | None = None
    experiment_name: str = "deepfakenet"
    model_name: str = "deepfakenet"


def registry_config(cfg: DictConfig) -> RegistryConfig:
    """The ``registry`` node of a composed config, interpolations (``${oc.env:...}``) resolved."""
    return RegistryConfig(**OmegaConf.to_container(cfg.registry, resolve=True))


#: Tracking URI schemes of a remote tracking server, which decides where artifacts go.
REMOTE_SCHEMES = frozenset({"http", "https"})


def artifact_location_for(tracking_uri: str | None, artifact_location: str | None) -> str | None:
    """The artifact root to create an experiment with: None when a tracking server decides.

    A local store (sqlite, PostgreSQL URL) needs an explicit root, or MLflow writes under the
    working directory. A tracking server (``http(s)://``) must choose its own: there, None gives
    ``mlflow-artifacts:/<id>``, proxied to the server's ``--artifacts-destination``, while a path
    is stored as given (measured with MLflow 3.17: a trainer's local folder is accepted) and
    every other machine would then look for the artifacts in a folder it does not have.
    """
    scheme = urlparse(tracking_uri or "").scheme.lower()
    return None if scheme in REMOTE_SCHEMES else artifact_location


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of the experiment ``name``, created (with ``artifact_location``) if missing.

    Against a tracking server the server decides the artifact root (:func:`artifact_location_for`).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = artifact_location_for(client.tracking_uri, artifact_location)
    return str(client.create_experiment(name, artifact_location=location))


def mlflow_logger(**kwargs: Any) -> MLFlowLogger:
    """Lightning's ``MLFlowLogger`` with :func:`artifact_location_for` applied.

    ``conf/logger/mlflow.yaml`` instantiates this in place of the class: the logger creates the
    training experiment when it does not exist yet, with the artifact root it was given, which
    a tracking server (``tracking_uri`` http(s)://) must choose itself.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    # No tracking_uri: the logger falls back to MLflow's (MLFLOW_TRACKING_URI), so judge that.
    kwargs["artifact_location"] = artifact_location_for(
        kwargs.get("tracking_uri") or mlflow.get_tracking_uri(), kwargs.get("artifact_location")
    )
    return MLFlowLogger(**kwargs)


#: MLflow REST settings of a process that reads the registry on the side (the service's champion
#: watcher, the admin page): no retry, 10 s per call. MLflow's defaults (7 retries with backoff,
#: 120 s per try) hold one call about 4 minutes while a tracking server is down (measured: 247 s),
#: and log a urllib3 warning per retry.
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast_http_calls() -> None:
    """Make this process's MLflow REST calls fail fast, unless the operator chose a policy.

    For processes that must stay responsive while the registry is down: the service polls
    again anyway, the admin page says the registry cannot be shown. Jobs keep MLflow's retries
    (a job needs its registry and may as well wait through a restart). MLflow reads these
    variables at each call; values already set (``MLFLOW_HTTP_REQUEST_*``) win.
    """
    for name, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(name, value)


def use(config: RegistryConfig) -> MlflowClient:
    """Point this process's MLflow at ``config`` and return a client for it."""
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    return MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)


def model_uri(model_name: str, ref: str | int) -> str:
    """``models:/name@alias`` for an alias, ``models:/name/N`` for a version number."""
    ref = str(ref)
    return f"models:/{model_name}/{ref}" if ref.isdigit() else f"models:/{model_name}@{ref}"


def log_and_register(
    net: DeepfakeNet,
    model_name: str,
    tags: dict[str, str] | None = None,
    extra_files: Sequence[str | Path] | None = None,
) -> ModelVersion:
    """Log ``net`` to the active run and register it as a new version of ``model_name``.

    ``extra_files`` (the ONNX models and ``parity.json`` of :mod:`deepfakenet.export`) are logged
    *inside* the MLflow model, under ``extra_files/<name>``: the version's folder then holds
    everything a server needs, and BentoML's ``import_model`` copies it whole. When a
    ``parity.json`` is among them, its verdicts become version tags
    (``deepfakenet.int8_parity=pass|fail``, the deltas), so the registry UI shows them.

    Args:
        net: The trained (and calibrated) network.
        model_name: Registered model name.
        tags: Version tags (data version, git commit, ...).
        extra_files: Files to store with the model (their base names must differ).

    Returns:
        The new model version.
    """
    net = net.cpu().eval()
    files = [Path(f) for f in extra_files or []]
    tags = dict(tags or {})
    parity_file = next((f for f in files if f.name == PARITY_FILE), None)
    if parity_file is not None:
        tags.update(parity_tags(json.loads(parity_file.read_text())))
    example = np.zeros((1, 3, net.crop_size, net.crop_size), dtype=np.float32)
    info = mlflow.pytorch.log_model(
        net,
        name=MODEL_ARTIFACT,
        serialization_format="pickle",
        input_example=example,
        extra_files=[str(f) for f in files] or None,
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"torchvision=={torchvision.__version__.split('+')[0]}",
        ],
    )
    # The tags go with the registration itself: a process that dies in between leaves no
    # version without them (a federated version without its tag would look like any other).
    version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    log.info("registered %s version %s from run %s", model_name, version.version, info.run_id)
    return MlflowClient().get_model_version(model_name, str(version.version))


#: The MLflow error code of a model or version that does not exist (HTTP 404 over REST).
_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"


def is_not_found(err: MlflowException) -> bool:
    """Whether ``err`` says the registered model, version or alias does not exist.

    Only this may be read as "there is no champion (yet)"; anything else (a tracking server's
    5xx, a timeout, a permission error) must fail the caller, or a registry outage would crown a
    model without comparison. MLflow 3.17 reports a missing model or version as
    ``RESOURCE_DOES_NOT_EXIST``, but a missing *alias* of an existing model as
    ``INVALID_PARAMETER_VALUE`` ("Registered model alias X not found."), in the SQL store and, the
    same code and message relayed, from a tracking server over REST (HTTP 400). The same code
    also covers invalid names, so the alias case is told apart by its message.
    """
    code = str(getattr(err, "error_code", ""))
    if code == _DOES_NOT_EXIST:
        return True
    message = str(getattr(err, "message", err)).lower()
    return code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message


def version_for_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or model) does not exist.

    Raises:
        MlflowException: Any other registry failure (see :func:`is_not_found`).
    """
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` at ``version``."""
    client.set_registered_model_alias(model_name, alias, str(version))
    log.info("alias %s@%s -> version %s", model_name, alias, version)


def promote_if_no_champion(client: MlflowClient, model_name: str, version: str | int) -> bool:
    """Make ``version`` the champion when no champion exists yet (the very first model).

    Raises:
        MlflowException: The registry could not say whether a champion exists (an outage):
            nothing is crowned without an answer.
    """
    if version_for_alias(client, model_name, CHAMPION) is not None:
        return False
    set_alias(client, model_name, CHAMPION, version)
    return True


def promote(client: MlflowClient, model_name: str, version: str | int) -> str | None:
    """Make ``version`` the champion; the replaced champion keeps the ``previous`` alias.

    The ``previous`` alias is moved first, so a crash between the two writes leaves the champion
    untouched. Returns the version that was champion before (None for the first champion).
    A registry failure while reading the old champion is raised before anything moves, so
    ``previous`` is never skipped because of an outage.
    """
    old = version_for_alias(client, model_name, CHAMPION)
    if old is not None and str(old.version) == str(version):
        return str(old.version)
    if old is not None:
        set_alias(client, model_name, PREVIOUS, old.version)
    set_alias(client, model_name, CHAMPION, version)
    return str(old.version) if old is not None else None


def rollback(client: MlflowClient, model_name: str) -> tuple[str, str]:
    """Swap ``champion`` and ``previous``: the previous champion serves again.

    Returns:
        ``(new_champion, new_previous)`` versions.

    Raises:
        RegistryError: There is no ``previous`` (or no ``champion``) to swap.
        MlflowException: The registry could not be read (nothing is moved).
    """
    champion = version_for_alias(client, model_name, CHAMPION)
    previous = version_for_alias(client, model_name, PREVIOUS)
    if champion is None or previous is None:
        raise RegistryError(
            f"rollback needs both {model_name}@{CHAMPION} and {model_name}@{PREVIOUS}; "
            f"found champion={champion and champion.version}, "
            f"previous={previous and previous.version}: nothing to roll back to (a previous "
            "champion exists only once a retraining run has promoted a challenger)"
        )
    set_alias(client, model_name, CHAMPION, previous.version)
    set_alias(client, model_name, PREVIOUS, champion.version)
    return str(previous.version), str(champion.version)


def latest_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The highest-numbered version of ``model_name`` (None when nothing is registered)."""
    versions = client.search_model_versions(f"name = '{model_name}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def resolve_version(client: MlflowClient, model_name: str, ref: str | int) -> ModelVersion:
    """The model version an alias (``champion``), number, or ``latest`` refers to.

    Raises:
        RegistryError: Nothing is registered under that reference (an expected condition: the
            jobs exit 2 with one line).
        MlflowException: Any other registry failure, e.g. a tracking server's 5xx: unexpected,
            it keeps its traceback (the jobs exit 1) and a server keeps its current model.
    """
    try:
        if str(ref) == LATEST:
            version = latest_version(client, model_name)
            if version is None:
                raise RegistryError(f"no version of {model_name} is registered")
            return version
        if str(ref).isdigit():
            return client.get_model_version(model_name, str(ref))
        return client.get_model_version_by_alias(model_name, str(ref))
    except MlflowException as err:
        if not is_not_found(err):
            raise
        raise RegistryError(f"no model {model_uri(model_name, ref)} in the registry") from err


def _checked(net: object, where: str) -> DeepfakeNet:
    if not isinstance(net, DeepfakeNet):
        raise RegistryError(f"{where} is not a DeepfakeNet ({type(net)})")
    return net.eval()


def load_net(model_name: str, ref: str | int) -> tuple[DeepfakeNet, ModelVersion]:
    """Load a registered detector on the CPU in eval mode.

    Args:
        model_name: Registered model name.
        ref: An alias (``champion``), a version number, or ``latest`` (the newest version).
    """
    version = resolve_version(MlflowClient(), model_name, ref)
    uri = model_uri(model_name, version.version)
    return _checked(mlflow.pytorch.load_model(uri, map_location="cpu"), uri), version


def download_model(
    model_name: str, ref: str | int, dst_path: str | Path | None = None
) -> tuple[Path, ModelVersion]:
    """Download a registered version's MLflow model folder (weights and ``extra_files/``).

    One download gives a server both the network (:func:`load_net_from_dir`) and its ONNX
    artifacts (:func:`deepfakenet.backends.load_backend`), of the same version by construction.

    Args:
        model_name: Registered model name.
        ref: An alias, a version number, or ``latest``.
        dst_path: Folder to download into (None: a new temporary folder).

    Returns:
        ``(local model folder, version)``.

    Raises:
        RegistryError: Nothing is registered under ``ref``.
    """
    version = resolve_version(MlflowClient(), model_name, ref)
    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri(model_name, version.version),
        dst_path=None if dst_path is None else str(dst_path),
    )
    return Path(local), version


def load_net_from_dir(path: str | Path) -> DeepfakeNet:
    """Load a detector from a local MLflow model folder (e.g. one copied into BentoML's store)."""
    return _checked(mlflow.pytorch.load_model(str(path), map_location="cpu"), str(path))


#: Version tags of the clip rule ``make video-eval`` chose for the version on validation clips.
VIDEO_QUANTILE_TAG = "deepfakenet.video.quantile"
VIDEO_THRESHOLD_TAG = "deepfakenet.video.threshold"


def version_labels(version: ModelVersion, alias: str | None = None) -> dict[str, str]:
    """What a deployment should know of a version.

    Number, run, data version, alias, and its clip rule (``video_quantile`` /
    ``video_threshold``) when ``make video-eval`` chose one for it.
    """
    tags = version.tags or {}
    labels = {
        "model_name": version.name,
        "model_version": str(version.version),
        "run_id": version.run_id or "",
        "data_version": tags.get("data_version", "unknown"),
        "alias": alias or "",
    }
    for key, tag in (
        ("video_quantile", VIDEO_QUANTILE_TAG),
        ("video_threshold", VIDEO_THRESHOLD_TAG),
    ):
        if tag in tags:
            labels[key] = tags[tag]
    return labels


def set_video_rule(
    client: MlflowClient, name: str, version: str | int, quantile: float, threshold: float
) -> None:
    """Record the clip rule chosen for a version (read back by :func:`version_labels`)."""
    client.set_model_version_tag(name, str(version), VIDEO_QUANTILE_TAG, f"{quantile:g}")
    client.set_model_version_tag(name, str(version), VIDEO_THRESHOLD_TAG, f"{threshold:.6f}")
    log.info(
        "version %s of %s: video rule quantile %g, threshold %.6f",
        version,
        name,
        quantile,
        threshold,
    )


#: Run tags of the retraining job (written by ``retrain``, read by the admin dashboard).
RETRAIN_TAG = "deepfakenet.retrain"
DECISION_TAG = "deepfakenet.retrain.decision"


def versions_frame(client: MlflowClient, model_name: str) -> pd.DataFrame:
    """Every registered version with its aliases, run, data version and creation time.

    Empty when the model is not registered; any other registry failure is raised.

    Columns: ``version`` (int), ``aliases`` (comma-separated), ``run_id``, ``data_version``,
    ``created_at`` (UTC), ``status``; newest first. Empty when nothing is registered.
    """
    columns = ["version", "aliases", "run_id", "data_version", "created_at", "status"]
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
        aliases = client.get_registered_model(model_name).aliases or {}
    except MlflowException as err:  # only "no such model" is empty; an outage is an error
        if not is_not_found(err):
            raise
        return pd.DataFrame(columns=columns)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = [
        {
            "version": int(v.version),
            "aliases": ",".join(sorted(by_version.get(str(v.version), []))),
            "run_id": v.run_id,
            "data_version": (v.tags or {}).get("data_version", "unknown"),
            "created_at": pd.to_datetime(v.creation_timestamp, unit="ms", utc=True),
            "status": v.status,
        }
        for v in versions
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("version", ascending=False).reset_index(drop=True)


def retrain_runs_frame(client: MlflowClient, experiment_name: str) -> pd.DataFrame:
    """The retraining job's runs (newest first): decision, versions compared, key metrics.

    Columns: ``run_id``, ``started_at`` (UTC), ``status``, ``decision``, and every
    ``retrain/*`` metric and ``deepfakenet.retrain.*`` tag of the run (prefix stripped).
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return pd.DataFrame(columns=["run_id", "started_at", "status", "decision"])
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{RETRAIN_TAG}` = 'true'",
        order_by=["attributes.start_time DESC"],
    )
    rows = []
    for run in runs:
        row: dict[str, object] = {
            "run_id": run.info.run_id,
            "started_at": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "status": run.info.status,
            "decision": run.data.tags.get(DECISION_TAG, ""),
        }
        row.update(
            {
                k.removeprefix(f"{RETRAIN_TAG}."): v
                for k, v in run.data.tags.items()
                if k.startswith(f"{RETRAIN_TAG}.") and k != DECISION_TAG
            }
        )
        row.update({k: v for k, v in run.data.metrics.items() if k.startswith("retrain/")})
        rows.append(row)
    return (
        pd.DataFrame(rows)
        if rows
        else pd.DataFrame(columns=["run_id", "started_at", "status", "decision"])
    )
