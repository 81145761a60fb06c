"""ONNX export, static int8 quantization and the parity check that decides what may be served.

At registration (:func:`build_artifacts`, called by :mod:`deepfakenet.pipeline`) the calibrated
network is exported to ONNX (fp32), quantized to int8 with ONNX Runtime's own static QDQ
tooling, and all three (eager torch, ONNX fp32, ONNX int8) score the TEST split through the one
calibration path, :func:`deepfakenet.inference.scores_from_outputs`. A faster model is only worth
serving if it makes the same decisions: the check compares AUROC and, at the stored threshold,
the false-positive rate of every real source (an int8 model that flags one camera source 3 %
more often is a regression the pooled FPR would hide). ``parity.json`` records the result and
travels with the version (``extra_files/`` of its MLflow model); :func:`deepfakenet.backends.
load_backend` serves only what passed.

Why static QDQ per-channel int8: on the CPUs this project serves from, ONNX Runtime's *dynamic*
int8 (weights only) is no faster than fp32, while static int8 with per-channel weight scales is
about five times eager fp32 (FIELD-NOTES). Calibration images are training-split images through
the evaluation transform, never the test split (the parity check must not grade its own
calibration data) and never augmented (ranges must be those of served inputs).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from deepfakenet.backends import (
    INPUT_NAME,
    ONNX,
    ONNX_FILE,
    ONNX_INT8,
    ONNX_INT8_FILE,
    OUTPUT_NAMES,
    PARITY_FILE,
    TORCH,
    Backend,
    OnnxBackend,
    TorchBackend,
    sha256_file,
)
from deepfakenet.data.datamodule import DeepfakeDataModule, ImageDataset
from deepfakenet.inference import scores_from_outputs
from deepfakenet.labels import REAL_TARGET
from deepfakenet.metrics import defined_metrics
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.preprocessing import build_transform

log = logging.getLogger(__name__)

#: The opset the TorchScript exporter targets (ORT 1.32 quantizes every op ResNet18 uses at 17).
OPSET = 17


@dataclass(frozen=True)
class ExportConfig:
    """``conf/export``: what is built at registration and how strict parity is.

    Attributes:
        enabled: Build ONNX artifacts at registration (off: the version serves torch only).
        quantize: Also build the static int8 model.
        dynamic_spatial: Export height and width as dynamic axes (the net is fully
            convolutional; one file serves the crop size and, e.g., 224 px benchmarks).
        int8_activations: ``uint8`` (U8S8) or ``int8`` (S8S8), see :func:`quantize_int8`.
        int8_keep_float: Node-name prefixes kept in fp32 in the int8 model (the high-pass
            front end), see :func:`quantize_int8`.
        calibration_images: Training-split images the int8 ranges are calibrated on.
        calibration_batch_size: Images per calibration batch.
        parity_batch_size: Images per batch when scoring the test split.
        max_auroc_delta: Largest ``|AUROC - AUROC_reference|`` that passes.
        max_source_fpr_delta: Largest change of any real source's FPR at the stored threshold.
        max_fp32_logit_delta: Largest ``|logit - logit_torch|`` of the fp32 ONNX model (an
            exact export is ~1e-5 off; more means a broken export, not rounding).
        threads: ONNX Runtime intra-op threads while checking (None: all cores).
        seed: Seed of the calibration sample.
    """

    enabled: bool = True
    quantize: bool = True
    dynamic_spatial: bool = True
    int8_activations: str = "uint8"
    int8_keep_float: tuple[str, ...] = ("/input_filter/", "/conv1/")
    calibration_images: int = 256
    calibration_batch_size: int = 32
    parity_batch_size: int = 64
    max_auroc_delta: float = 0.005
    max_source_fpr_delta: float = 0.01
    max_fp32_logit_delta: float = 1e-3
    threads: int | None = None
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: ExportConfig | DictConfig | Mapping[str, Any] | None) -> ExportConfig:
        """From the ``export`` node (unknown keys are an error, not silently ignored)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, ExportConfig):
            return cfg
        values = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown export settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]


class LogitsAndFeatures(nn.Module):
    """The exported graph: one pass giving both logits and the 512-d features.

    The service needs the features too (drift monitoring), so they are a graph output instead
    of a second model; the head is the network's own ``backbone.fc``, as in ``score_batch``.
    """

    def __init__(self, net: DeepfakeNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits N x 2, features N x 512)``."""
        features = self.net.features(pixels)
        return self.net.backbone.fc(features), features


def export_onnx(net: DeepfakeNet, path: str | Path, dynamic_spatial: bool = True) -> Path:
    """Export ``net`` (a copy, on the CPU, eval mode) to an ONNX file with two outputs.

    Uses the TorchScript exporter (``dynamo=False``): its graph for ResNet18 is plain Conv/Relu/
    MaxPool/GlobalAveragePool/Gemm, which ONNX Runtime's quantizer handles end to end.

    Args:
        net: The calibrated network (left untouched).
        path: Output file.
        dynamic_spatial: Also make height and width dynamic (batch always is).

    Returns:
        ``path``.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = LogitsAndFeatures(copy.deepcopy(net).cpu().eval()).eval()
    example = torch.zeros(1, 3, net.crop_size, net.crop_size)
    pixel_axes = {0: "batch", 2: "height", 3: "width"} if dynamic_spatial else {0: "batch"}
    dynamic_axes = {INPUT_NAME: pixel_axes, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with torch.no_grad(), warnings.catch_warnings():
        # The reflect pad of the high-pass filter slices with step -1, which the exporter
        # cannot fold: a harmless, loud warning per export.
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path))
    log.info("exported ONNX fp32 model to %s", path)
    return path


class _BatchReader:
    """ONNX Runtime's ``CalibrationDataReader`` over an iterable of float32 batches."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += len(batch)
        return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # MinMax reads the data once; nothing to rewind
        pass


class _DropRootInfo(logging.Filter):
    """Drops the quantizer's INFO lines, which it logs on the root logger (one per bias copy)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    batches: Iterable[np.ndarray],
    activations: str = "uint8",
    keep_float: Sequence[str] = (),
) -> Path:
    """Static int8 (QDQ, per-channel weights) with ONNX Runtime's tooling, as its docs do it.

    ``quant_pre_process`` (symbolic shape inference and graph fusion, e.g. Conv+BatchNorm) runs
    first, so the quantizer sees the graph ORT will execute; then ``quantize_static`` calibrates
    activation ranges (MinMax) on ``batches``.

    Args:
        fp32_path: The fp32 ONNX model.
        out_path: Where the int8 model goes.
        batches: Float32 ``N x 3 x H x W`` batches through the evaluation transform
            (training-split images).
        activations: ``uint8`` (U8S8) or ``int8`` (S8S8). ONNX Runtime's docs recommend S8S8
            on CPUs with VNNI; without it (AVX2 only, as on this project's 2-core machines)
            U8S8 measured 2 to 2.5 times faster than S8S8 on ResNet18 (S8S8 was no faster than
            fp32 there). Any saturation it causes shows up in the parity check.
        keep_float: Node-name prefixes left in fp32 (e.g. ``/input_filter/``, ``/conv1/``):
            the high-pass residual the detector reads is small next to the image's range, and
            8 bits over that range wipe out the traces. Measured on the demo model: all-int8
            moved test AUROC by 0.025 (and with it every calibration choice tried: MinMax,
            percentile, entropy, S8S8); with the filter and the stem convolution in fp32 it
            moved by 0.0004 at the same speed.

    Returns:
        ``out_path``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepped = out_path.with_name(out_path.stem + ".prep.onnx")
    reader = _BatchReader(batches)

    class Reader(CalibrationDataReader):  # ORT checks the base class
        def get_next(self) -> dict[str, np.ndarray] | None:
            return reader.get_next()

    quiet = _DropRootInfo()
    logging.getLogger().addFilter(quiet)
    try:
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=False)
        import onnx

        excluded = [
            node.name
            for node in onnx.load(str(prepped)).graph.node
            if any(node.name.startswith(prefix) for prefix in keep_float)
        ]
        if keep_float and not excluded:
            raise ValueError(f"no graph node starts with any of {list(keep_float)}")
        quantize_static(
            str(prepped),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            # MinMax adds ReduceMin/ReduceMax outputs: only two scalars per tensor and batch are
            # kept, so the whole calibration set fits in memory at any size. (Do not set
            # CalibMaxIntermediateOutputs: ORT 1.32 discards, not merges, what it had collected.)
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        logging.getLogger().removeFilter(quiet)
        prepped.unlink(missing_ok=True)
    if reader.count == 0:
        raise ValueError("int8 calibration got no images")
    log.info("quantized %s to int8 (%d calibration images): %s", fp32_path, reader.count, out_path)
    return out_path


def calibration_batches(
    datamodule: DeepfakeDataModule, crop_size: int, n_images: int, batch_size: int, seed: int = 0
) -> Iterator[np.ndarray]:
    """Up to ``n_images`` training-split images (a seeded sample), evaluation transform.

    The evaluation transform (native-resolution centre crop, normalised) is the one
    preprocessing a served image goes through, so the ranges fitted are those seen in service.
    """
    rows = datamodule.split_index("train")
    if len(rows) > n_images:
        rows = rows.sample(n=n_images, random_state=seed)
    dataset = ImageDataset(rows, build_transform(crop_size, train=False), datamodule.limits)
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        yield x.numpy()


# --------------------------------------------------------------------------- parity


@dataclass
class _Scored:
    """One backend's scores on the test split."""

    logits: list[np.ndarray] = field(default_factory=list)
    prob: list[np.ndarray] = field(default_factory=list)
    decisions: list[np.ndarray] = field(default_factory=list)

    def done(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.concatenate(self.logits),
            np.concatenate(self.prob),
            np.concatenate(self.decisions),
        )


def _summary(
    net: DeepfakeNet,
    prob: np.ndarray,
    decisions: np.ndarray,
    targets: np.ndarray,
    sources: list[str],
) -> dict[str, Any]:
    """AUROC and, at the stored threshold, the FPR overall and per real source."""
    metrics = defined_metrics(
        torch.from_numpy(prob), torch.from_numpy(targets), float(net.threshold)
    )
    reals = targets == REAL_TARGET
    frame = pd.DataFrame({"source": sources, "flagged": decisions})[reals]
    by_source = frame.groupby("source", sort=True)["flagged"]
    return {
        "auroc": metrics["auroc"],
        "fpr": float(frame["flagged"].mean()) if len(frame) else None,
        "fpr_by_source": {str(s): float(v) for s, v in by_source.mean().items()},
        "n_real_by_source": {str(s): int(v) for s, v in by_source.size().items()},
    }


def _compare(
    this: dict[str, Any],
    reference: dict[str, Any],
    outputs: tuple[np.ndarray, np.ndarray],
    reference_outputs: tuple[np.ndarray, np.ndarray],
    reference_name: str,
    max_auroc_delta: float,
    max_source_fpr_delta: float,
    max_logit_delta: float | None = None,
) -> dict[str, Any]:
    """The parity of one backend against its reference; ``passed`` applies the tolerances."""
    a, b = this["auroc"], reference["auroc"]
    # A one-class test split: AUROC means nothing for either, the FPR rule alone decides. One
    # defined and the other not (a non-finite score) fails.
    auroc_delta = abs(a - b) if a is not None and b is not None else None
    auroc_ok = (a is None) == (b is None) and (
        auroc_delta is None or auroc_delta <= max_auroc_delta
    )
    fpr_deltas = {
        s: abs(this["fpr_by_source"].get(s, 0.0) - v) for s, v in reference["fpr_by_source"].items()
    }
    max_fpr_delta = max(fpr_deltas.values(), default=0.0)
    logit_delta = float(np.abs(outputs[0] - reference_outputs[0]).max()) if len(outputs[0]) else 0.0
    prob_delta = float(np.abs(outputs[1] - reference_outputs[1]).max()) if len(outputs[1]) else 0.0
    ok = auroc_ok and max_fpr_delta <= max_source_fpr_delta
    tolerances: dict[str, float] = {
        "max_auroc_delta": max_auroc_delta,
        "max_source_fpr_delta": max_source_fpr_delta,
    }
    if max_logit_delta is not None:
        ok = ok and logit_delta <= max_logit_delta
        tolerances["max_abs_logit_delta"] = max_logit_delta
    return {
        "reference": reference_name,
        "passed": bool(ok and len(outputs[0]) > 0),
        "auroc_delta": auroc_delta,
        "max_source_fpr_delta": max_fpr_delta,
        "source_fpr_delta": fpr_deltas,
        "max_abs_logit_delta": logit_delta,
        "max_abs_prob_delta": prob_delta,
        "tolerances": tolerances,
    }


def check_parity(
    net: DeepfakeNet,
    backends: Mapping[str, Backend],
    rows: pd.DataFrame,
    config: ExportConfig,
    limits: Any = None,
) -> dict[str, Any]:
    """Score ``rows`` (the test split) with every backend; compare ONNX to torch, int8 to ONNX.

    Every backend's outputs go through :func:`~deepfakenet.inference.scores_from_outputs`, so
    the comparison is of what a client would be told. Each image is decoded once and fed to all
    backends.

    Args:
        net: The calibrated network (threshold, temperature).
        backends: ``torch`` and any of ``onnx``, ``onnx-int8``.
        rows: Index rows with ``path``, ``target`` and ``source`` (else ``group``).
        config: Tolerances and batch size.
        limits: The decoder's limits (the datamodule's).

    Returns:
        ``{"n_images", "n_real", "threshold", "input_size", "backends": {name: summary},
        "checks": {"onnx": ..., "onnx-int8": ...}}``.
    """
    dataset = ImageDataset(rows, build_transform(net.crop_size, train=False), limits)
    loader = DataLoader(dataset, batch_size=config.parity_batch_size, shuffle=False, num_workers=0)
    scored = {name: _Scored() for name in backends}
    targets = []
    for x, y in loader:
        batch = x.numpy()
        targets.append(np.asarray(y))
        for name, backend in backends.items():
            logits, features = backend.run(batch)
            scores = scores_from_outputs(net, torch.from_numpy(logits), torch.from_numpy(features))
            scored[name].logits.append(logits)
            scored[name].prob.append(scores.prob_fake.numpy())
            scored[name].decisions.append(net.decide(scores.prob_fake).numpy())
    target = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
    column = "source" if "source" in rows else "group"
    sources = [str(s) or "(none)" for s in rows[column].tolist()]
    outputs = {}
    summaries = {}
    for name, s in scored.items():
        if not targets:
            raise ValueError("the parity check has no test images")
        logits, prob, decisions = s.done()
        outputs[name] = (logits, prob)
        summaries[name] = _summary(net, prob, decisions, target, sources)
    checks = {}
    if ONNX in backends:
        checks[ONNX] = _compare(
            summaries[ONNX],
            summaries[TORCH],
            outputs[ONNX],
            outputs[TORCH],
            TORCH,
            config.max_auroc_delta,
            config.max_source_fpr_delta,
            config.max_fp32_logit_delta,
        )
    if ONNX_INT8 in backends:
        checks[ONNX_INT8] = _compare(
            summaries[ONNX_INT8],
            summaries[ONNX],
            outputs[ONNX_INT8],
            outputs[ONNX],
            ONNX,
            config.max_auroc_delta,
            config.max_source_fpr_delta,
        )
    return {
        "split": "test",
        "n_images": len(target),
        "n_real": int((target == REAL_TARGET).sum()),
        "threshold": float(net.threshold),
        "input_size": int(net.crop_size),
        "backends": summaries,
        "checks": checks,
    }


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class ExportReport:
    """What :func:`build_artifacts` produced.

    Attributes:
        files: The files to log with the model (ONNX models and ``parity.json``).
        parity: The parity dict (also in ``parity.json``).
    """

    files: list[Path]
    parity: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        """Run metrics: per check ``export/<backend>_<delta>`` and ``export/<backend>_passed``."""
        out: dict[str, float] = {}
        for name, check in self.parity.get("checks", {}).items():
            key = "int8" if name == ONNX_INT8 else name
            out[f"export/{key}_passed"] = float(bool(check.get("passed")))
            for delta in (
                "auroc_delta",
                "max_source_fpr_delta",
                "max_abs_logit_delta",
                "max_abs_prob_delta",
            ):
                value = check.get(delta)
                if value is not None and math.isfinite(value):
                    out[f"export/{key}_{delta}"] = float(value)
        return out


def build_artifacts(
    net: DeepfakeNet,
    datamodule: DeepfakeDataModule,
    out_dir: str | Path,
    cfg: ExportConfig | DictConfig | Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export, quantize and check ``net``; write ``parity.json``. Used at registration.

    An int8 step that fails (an op the quantizer cannot handle) is recorded in the parity dict
    as a failed check with its error, and the fp32 model still ships; a failing fp32 export
    raises (the caller registers the version without artifacts).

    Args:
        net: The calibrated network.
        datamodule: The training run's data (train split: calibration; test split: parity).
        out_dir: Folder for the files.
        cfg: The ``export`` node (see :class:`ExportConfig`).

    Returns:
        The files to log with the model and the parity dict.
    """
    import onnxruntime

    config = ExportConfig.from_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(net).cpu().eval()
    datamodule.setup()
    fp32 = export_onnx(net, out / ONNX_FILE, config.dynamic_spatial)
    backends: dict[str, Backend] = {
        TORCH: TorchBackend(net),
        ONNX: OnnxBackend(fp32, ONNX, config.threads),
    }
    files = [fp32]
    int8_error = None
    if config.quantize:
        try:
            batches = calibration_batches(
                datamodule,
                net.crop_size,
                config.calibration_images,
                config.calibration_batch_size,
                config.seed,
            )
            int8 = quantize_int8(
                fp32,
                out / ONNX_INT8_FILE,
                batches,
                config.int8_activations,
                config.int8_keep_float,
            )
            backends[ONNX_INT8] = OnnxBackend(int8, ONNX_INT8, config.threads)
            files.append(int8)
        except Exception as err:  # fp32 still ships; the reason goes into parity.json
            log.exception("int8 quantization failed; the version gets fp32 ONNX only")
            int8_error = f"{type(err).__name__}: {err}"
    parity = check_parity(net, backends, datamodule.split_index("test"), config, datamodule.limits)
    if int8_error is not None:
        parity["checks"][ONNX_INT8] = {"passed": False, "error": int8_error}
    parity["files"] = {
        name: path.name for name, path in zip((ONNX, ONNX_INT8), files, strict=False)
    }
    # What was checked, byte for byte: the server refuses a file that is not the one that passed.
    parity["sha256"] = {
        name: sha256_file(path) for name, path in zip((ONNX, ONNX_INT8), files, strict=False)
    }
    parity["config"] = asdict(config)
    parity["onnxruntime"] = onnxruntime.__version__
    parity["opset"] = OPSET
    path = out / PARITY_FILE
    path.write_text(json.dumps(parity, indent=2, sort_keys=True, default=_json_default))
    for name, check in parity["checks"].items():
        log.info(
            "%s parity vs %s: %s (AUROC delta %s, max source FPR delta %s)",
            name,
            check.get("reference", "-"),
            "pass" if check.get("passed") else "FAIL",
            check.get("auroc_delta"),
            check.get("max_source_fpr_delta"),
        )
    return ExportReport(files=[*files, path], parity=json.loads(path.read_text()))


def _json_default(value: Any) -> Any:
    """``json.dumps`` for numpy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
