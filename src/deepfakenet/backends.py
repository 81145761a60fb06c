"""Inference backends: the same network run by eager PyTorch, ONNX Runtime fp32 or ONNX int8.

Every backend does one thing, ``batch -> (logits, features)``; what the logits *mean*
(temperature, offset, threshold, labels) is applied afterwards by
:func:`deepfakenet.inference.scores_from_outputs`, with the buffers of the
:class:`~deepfakenet.models.net.DeepfakeNet` loaded from the same model folder. So a faster
backend can change the arithmetic, never the calibration.

A registered version carries its ONNX artifacts inside its MLflow model folder
(``extra_files/``, see :mod:`deepfakenet.export`), with ``parity.json``: how far each ONNX model
was from its reference on the test split when it was registered. :func:`load_backend` only serves
an artifact that passed, and says in its info dict (shown by the service's ``GET /model``) what
it serves and why it fell back, so a slower-than-asked model is never a silent surprise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np
import torch

from deepfakenet.models.net import DeepfakeNet
from deepfakenet.settings import BackendChoice, usable_cores

log = logging.getLogger(__name__)

#: What a deployment may ask for: ``auto`` is the fastest artifact that passed parity.
BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)
TORCH = "torch"
ONNX = "onnx"
ONNX_INT8 = "onnx-int8"

#: File names of the artifacts, the same in an export folder and in ``<model>/extra_files``.
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
PARITY_FILE = "parity.json"
#: Where ``mlflow.pytorch.log_model(extra_files=...)`` puts the files inside the model folder.
EXTRA_FILES_DIR = "extra_files"
#: Names of the graph's input and outputs (see :func:`deepfakenet.export.export_onnx`).
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("logits", "features")
#: Version tags summarising parity (``deepfakenet.int8_parity=pass|fail`` ...).
TAG_PREFIX = "deepfakenet."


class Backend(Protocol):
    """Runs the network on a normalised batch; safe to call from several threads at once.

    Attributes:
        name: One of ``torch``, ``onnx``, ``onnx-int8`` (what actually runs).
    """

    name: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 ``N x 3 x H x W`` batch -> (logits ``N x 2``, features ``N x 512``)."""
        ...


class TorchBackend:
    """Eager PyTorch: the reference every other backend is checked against.

    Args:
        net: The network, on the CPU in eval mode.
    """

    name = TORCH

    def __init__(self, net: DeepfakeNet) -> None:
        self.net = net.eval()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and logits in one pass, as :func:`deepfakenet.inference.score_batch`."""
        with torch.inference_mode():
            features = self.net.features(torch.from_numpy(np.ascontiguousarray(batch)))
            logits = self.net.backbone.fc(features)
        return logits.float().numpy(), features.float().numpy()


class OnnxBackend:
    """An ONNX model run by ONNX Runtime on the CPU (``InferenceSession.run`` is thread-safe).

    Args:
        path: The ``.onnx`` file.
        name: ``onnx`` or ``onnx-int8`` (reported as the backend's name).
        threads: Intra-op threads of the session (None: ONNX Runtime's default, all cores).
    """

    def __init__(self, path: str | Path, name: str = ONNX, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.name = name
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and features of a float32 ``N x 3 x H x W`` batch."""
        pixels = np.ascontiguousarray(batch, dtype=np.float32)
        logits, features = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels})
        return logits, features


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file (recorded in ``parity.json``, checked when serving)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_dir(model_dir: str | Path) -> Path:
    """The folder holding the ONNX artifacts of a model folder (MLflow's or an export folder)."""
    model_dir = Path(model_dir)
    nested = model_dir / EXTRA_FILES_DIR
    return nested if (nested / PARITY_FILE).is_file() else model_dir


def read_parity(model_dir: str | Path | None) -> dict[str, Any] | None:
    """The ``parity.json`` of a model folder, or None when it has none (an older version)."""
    if model_dir is None:
        return None
    path = artifact_dir(model_dir) / PARITY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def passed(parity: dict[str, Any] | None, backend: str) -> bool:
    """Whether ``backend``'s artifact passed its parity check (fp32 too, for int8)."""
    if not parity:
        return False
    checks = parity.get("checks", {})
    ok = bool(checks.get(ONNX, {}).get("passed"))
    if backend == ONNX_INT8:
        return ok and bool(checks.get(ONNX_INT8, {}).get("passed"))
    return ok


def parity_tags(parity: dict[str, Any]) -> dict[str, str]:
    """Model version tags summarising a parity dict (pass/fail and the deltas that decide it)."""
    tags: dict[str, str] = {}
    checks = parity.get("checks", {})
    for backend, key in ((ONNX, "onnx_parity"), (ONNX_INT8, "int8_parity")):
        check = checks.get(backend)
        if check is None:
            tags[TAG_PREFIX + key] = "missing"
            continue
        tags[TAG_PREFIX + key] = "pass" if check.get("passed") else "fail"
        for delta in ("auroc_delta", "max_source_fpr_delta", "max_abs_prob_delta"):
            value = check.get(delta)
            short = "int8" if backend == ONNX_INT8 else "onnx"
            tags[f"{TAG_PREFIX}{short}_{delta}"] = "null" if value is None else f"{value:.6g}"
    return tags


def _smoke_test(backend: Backend, reference: TorchBackend | None, side: int) -> None:
    """Run one random batch: right shapes, finite values, and (fp32) the torch reference's logits.

    Catches, at load time rather than on the first request, an artifact that loads but does not
    belong to this network (another version's weights, a truncated re-export).
    """
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((2, 3, side, side)).astype(np.float32)
    logits, features = backend.run(batch)
    if logits.shape != (2, 2) or features.ndim != 2 or features.shape[0] != 2:
        raise ValueError(f"unexpected output shapes {logits.shape}, {features.shape}")
    if not (np.isfinite(logits).all() and np.isfinite(features).all()):
        raise ValueError("non-finite outputs")
    if reference is not None:
        expected, _ = reference.run(batch)
        gap = float(np.abs(expected - logits).max())
        scale = 1e-3 * max(1.0, float(np.abs(expected).max()))
        if gap > scale:
            raise ValueError(f"logits differ from the network's by {gap:.3g} (> {scale:.3g})")


def load_backend(
    model_dir: str | Path | None,
    net: DeepfakeNet,
    choice: str = "auto",
    threads: int | None = None,
) -> tuple[Backend, dict[str, object]]:
    """The backend to serve ``net`` with, from the artifacts of its model folder.

    Rules: ``torch`` is always available. ``onnx`` / ``onnx-int8`` are served only when the
    artifact exists, passed its parity check at registration and loads; otherwise the next
    slower one is served (``onnx-int8`` -> ``onnx`` -> ``torch``) and ``note`` says why. ``auto``
    is the fastest artifact that passed parity. A file that does not load (corrupt, truncated)
    is logged and skipped: a server never fails to start because of an optional artifact.

    Args:
        model_dir: The version's MLflow model folder (artifacts under ``extra_files/``) or an
            export folder; None: no artifacts (torch).
        net: The network loaded from the same folder (calibration and threshold, and the torch
            fallback).
        choice: One of :data:`BACKEND_CHOICES`.
        threads: Intra-op threads for ONNX Runtime (None: its default, all cores).

    Returns:
        ``(backend, info)``; ``info`` is JSON-able: ``backend`` (served), ``requested``,
        ``int8_parity`` and ``onnx_parity`` (the checks of ``parity.json`` or None), ``note``.

    Raises:
        ValueError: ``choice`` is not one of :data:`BACKEND_CHOICES`.
    """
    if choice not in BACKEND_CHOICES:
        raise ValueError(
            f"unknown inference backend {choice!r}; choose one of {', '.join(BACKEND_CHOICES)}"
        )
    parity = None
    notes: list[str] = []
    try:
        parity = read_parity(model_dir)
    except (OSError, ValueError) as err:
        notes.append(f"unreadable {PARITY_FILE} ({err})")
    checks = (parity or {}).get("checks", {})
    info: dict[str, object] = {
        "requested": choice,
        "int8_parity": checks.get(ONNX_INT8),
        "onnx_parity": checks.get(ONNX),
        "threads": threads,
    }
    torch_backend = TorchBackend(net)
    if choice == TORCH:
        return torch_backend, {**info, "backend": TORCH, "note": ""}

    candidates = [ONNX_INT8, ONNX] if choice in ("auto", ONNX_INT8) else [ONNX]
    if parity is None:
        candidates = []
        if not notes:
            notes.append("this model version has no ONNX artifacts (registered before export)")
    for name in candidates:
        if not passed(parity, name):
            notes.append(_why_not(name, checks))
            continue
        path = artifact_dir(model_dir) / check_file(parity, name)  # type: ignore[arg-type]
        expected = (parity or {}).get("sha256", {}).get(name)
        if expected is not None and path.is_file() and sha256_file(path) != expected:
            log.error("%s artifact %s is not the file that passed parity", name, path)
            notes.append(f"{name} artifact {path.name} is not the file that passed parity")
            continue
        try:
            backend = OnnxBackend(path, name, threads)
            _smoke_test(backend, torch_backend if name == ONNX else None, net.crop_size)
        except Exception as err:  # any load failure: serve the slower backend, never crash
            log.exception("could not load the %s artifact %s; falling back", name, path)
            notes.append(f"{name} artifact {path.name} did not load ({type(err).__name__}: {err})")
            continue
        if choice not in ("auto", name):
            notes.insert(0, f"{choice} requested, serving {name}")
        note = "; ".join(notes)
        if note:
            log.warning("inference backend %s (requested %s): %s", name, choice, note)
        else:
            log.info("inference backend %s (requested %s)", name, choice)
        return backend, {**info, "backend": name, "note": note}
    note = "; ".join([f"{choice} requested, serving torch", *notes])
    log.warning("inference backend torch: %s", note)
    return torch_backend, {**info, "backend": TORCH, "note": note}


def _why_not(name: str, checks: dict[str, Any]) -> str:
    """Why ``name``'s artifact is not served, for the note."""
    check = checks.get(name)
    if check is None:
        return f"no {name} artifact"
    if check.get("error"):
        return f"{name} was not built ({check['error']})"
    if check.get("passed"):  # int8 passed against an fp32 ONNX that itself failed
        return f"{name} not served: the fp32 ONNX model it was checked against failed parity"
    return f"{name} failed parity at registration ({_summary(check)})"


def check_file(parity: dict[str, Any], name: str) -> str:
    """The file name of ``name``'s artifact recorded in ``parity.json`` (default names else)."""
    default = ONNX_INT8_FILE if name == ONNX_INT8 else ONNX_FILE
    return str(parity.get("files", {}).get(name, default))


def _summary(check: dict[str, Any]) -> str:
    """A one-line summary of a parity check for a note."""
    parts = []
    for key in ("auroc_delta", "max_source_fpr_delta"):
        value = check.get(key)
        if value is not None:
            parts.append(f"{key}={value:.4g}")
    tolerances = check.get("tolerances")
    if tolerances:
        parts.append("tolerances " + ", ".join(f"{k}={v}" for k, v in sorted(tolerances.items())))
    return ", ".join(parts)


def default_threads() -> int:
    """All cores this process may use (the benchmark's default)."""
    return usable_cores()
