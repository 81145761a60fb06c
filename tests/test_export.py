"""ONNX export, static int8 quantization, parity at registration and the backend layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from deepfakenet import registry
from deepfakenet.backends import (
    BACKEND_CHOICES,
    EXTRA_FILES_DIR,
    ONNX_FILE,
    ONNX_INT8_FILE,
    PARITY_FILE,
    OnnxBackend,
    TorchBackend,
    load_backend,
)
from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.export import (
    ExportConfig,
    ExportReport,
    build_artifacts,
    check_parity,
    export_onnx,
)
from deepfakenet.inference import score_batch, scores_from_outputs
from deepfakenet.models.net import DeepfakeNet
from tests.conftest import TrainedRegistry


def _net(seed: int = 0) -> DeepfakeNet:
    torch.manual_seed(seed)
    net = DeepfakeNet(crop_size=32, input_filter="highpass").eval()
    net.threshold.fill_(0.5)
    return net


def _datamodule(data: Path) -> DeepfakeDataModule:
    dm = DeepfakeDataModule(
        data, crop_size=32, batch_size=16, num_workers=0, val_fraction=0.25, test_fraction=0.25
    )
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path
) -> tuple[DeepfakeNet, Path, ExportReport]:
    """A random tiny net exported, quantized (on the train split) and checked (test split)."""
    net = _net()
    out = tmp_path_factory.mktemp("export")
    report = build_artifacts(
        net, _datamodule(tiny_data), out, {"calibration_images": 24, "calibration_batch_size": 8}
    )
    return net, out, report


def _copy(out: Path, dst: Path, edit=None) -> Path:
    """A copy of an export folder laid out as an MLflow model (``extra_files/``)."""
    target = dst / EXTRA_FILES_DIR
    shutil.copytree(out, target)
    if edit is not None:
        parity = json.loads((target / PARITY_FILE).read_text())
        edit(parity)
        (target / PARITY_FILE).write_text(json.dumps(parity))
    return dst


def test_onnx_fp32_matches_torch_at_any_batch_and_size(tmp_path):
    net = _net(1)
    path = export_onnx(net, tmp_path / "m.onnx")
    onnx_backend, torch_backend = OnnxBackend(path, "onnx", threads=1), TorchBackend(net)
    rng = np.random.default_rng(0)
    for n, side in ((1, 32), (5, 32), (3, 48)):
        batch = rng.standard_normal((n, 3, side, side)).astype(np.float32)
        logits, features = onnx_backend.run(batch)
        ref_logits, ref_features = torch_backend.run(batch)
        assert logits.shape == (n, 2) and features.shape == (n, 512)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(features, ref_features, atol=1e-4, rtol=1e-4)


def test_scores_from_outputs_is_score_batch():
    net = _net(2)
    net.temperature.fill_(1.7)
    net.logit_bias.fill_(0.3)
    net.threshold.fill_(0.4)
    batch = torch.randn(4, 3, 32, 32)
    direct = score_batch(net, batch)
    logits, features = TorchBackend(net).run(batch.numpy())
    via = scores_from_outputs(net, torch.from_numpy(logits), torch.from_numpy(features))
    assert via.labels == direct.labels
    torch.testing.assert_close(via.prob_fake, direct.prob_fake)
    torch.testing.assert_close(via.features, direct.features)


def test_artifacts_int8_runs_and_parity_is_recorded(built, tiny_data):
    _, out, report = built
    names = {p.name for p in report.files}
    assert names == {ONNX_FILE, ONNX_INT8_FILE, PARITY_FILE}
    parity = json.loads((out / PARITY_FILE).read_text())
    assert parity == report.parity and parity["n_images"] > 0
    assert set(parity["backends"]) == {"torch", "onnx", "onnx-int8"}
    fp32, int8 = parity["checks"]["onnx"], parity["checks"]["onnx-int8"]
    assert fp32["passed"] and fp32["reference"] == "torch" and fp32["max_abs_logit_delta"] < 1e-3
    assert int8["reference"] == "onnx" and int8["max_abs_logit_delta"] > 0
    for check in (fp32, int8):
        assert set(check["source_fpr_delta"]) == set(parity["backends"]["torch"]["fpr_by_source"])
    assert report.metrics()["export/onnx_passed"] == 1.0
    # int8 actually runs on photos (the distribution it was calibrated for), batch 1 and 5,
    # and stays near the fp32 scores.
    assert int8["max_abs_prob_delta"] < 0.2, int8
    int8_backend = OnnxBackend(out / ONNX_INT8_FILE, "onnx-int8")
    fp32_backend = OnnxBackend(out / ONNX_FILE, "onnx")
    photos, _ = next(iter(_datamodule(tiny_data).test_dataloader()))
    for n in (1, 5):
        q, features = int8_backend.run(photos[:n].numpy())
        f, _ = fp32_backend.run(photos[:n].numpy())
        assert q.shape == (n, 2) and features.shape == (n, 512) and np.isfinite(q).all()
        assert np.abs(q - f).max() < 0.2 * max(1.0, np.abs(f).max()), (q, f)


def test_the_high_pass_front_end_stays_float_in_the_int8_model(built, tmp_path):
    # The residual the detector reads is small next to the image's range: 8 bits over that range
    # wipe out the traces (the demo model lost 0.025 AUROC), so the filter and the stem conv
    # stay fp32 and everything after them is int8.
    import onnx

    from deepfakenet.export import quantize_int8

    _, out, _ = built
    graph = onnx.load(str(out / ONNX_INT8_FILE)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}

    def quantized(conv_name: str) -> bool:
        (conv,) = [n for n in graph.node if n.name == conv_name]
        return producer.get(conv.input[1]) == "DequantizeLinear"  # the weight is int8

    assert not quantized("/input_filter/Conv") and not quantized("/conv1/Conv")
    layer_convs = [n.name for n in graph.node if n.op_type == "Conv" and "/layer" in n.name]
    assert layer_convs and all(quantized(name) for name in layer_convs)
    with pytest.raises(ValueError, match="no graph node"):
        quantize_int8(out / ONNX_FILE, tmp_path / "x.onnx", [], keep_float=["/no_such/"])


def test_parity_rule_fails_beyond_tolerance(built, tiny_data):
    net, out, _ = built
    backends = {
        "torch": TorchBackend(net),
        "onnx": OnnxBackend(out / ONNX_FILE, "onnx"),
        "onnx-int8": OnnxBackend(out / ONNX_INT8_FILE, "onnx-int8"),
    }
    rows = _datamodule(tiny_data).split_index("test")
    strict = ExportConfig(max_auroc_delta=-1.0, max_source_fpr_delta=-1.0)
    parity = check_parity(net, backends, rows, strict)
    assert not parity["checks"]["onnx"]["passed"] and not parity["checks"]["onnx-int8"]["passed"]


def test_auto_serves_int8_when_it_passed(built, tmp_path):
    net, out, _ = built

    def both_pass(parity):
        parity["checks"]["onnx"]["passed"] = parity["checks"]["onnx-int8"]["passed"] = True

    backend, info = load_backend(_copy(out, tmp_path, both_pass), net, "auto", threads=1)
    assert backend.name == info["backend"] == "onnx-int8" and info["note"] == ""
    assert info["requested"] == "auto" and info["int8_parity"]["passed"] is True
    json.dumps(info)  # shown by GET /model
    logits, features = backend.run(np.zeros((2, 3, 32, 32), np.float32))
    assert logits.shape == (2, 2) and features.shape == (2, 512)


def test_failed_int8_parity_serves_fp32_onnx_with_a_note(built, tmp_path):
    net, out, _ = built

    def int8_fails(parity):
        parity["checks"]["onnx"]["passed"] = True
        parity["checks"]["onnx-int8"]["passed"] = False

    folder = _copy(out, tmp_path, int8_fails)
    for choice in ("onnx-int8", "auto"):
        backend, info = load_backend(folder, net, choice)
        assert backend.name == info["backend"] == "onnx"
        assert "onnx-int8 failed parity" in str(info["note"])
    backend, info = load_backend(folder, net, "onnx")
    assert backend.name == "onnx" and info["note"] == ""


def test_corrupt_onnx_file_falls_back_and_never_crashes(built, tmp_path):
    net, out, _ = built

    def both_pass(parity):
        parity["checks"]["onnx"]["passed"] = parity["checks"]["onnx-int8"]["passed"] = True
        parity.pop("sha256")  # no recorded hashes: the loader itself must cope

    folder = _copy(out, tmp_path, both_pass)
    (folder / EXTRA_FILES_DIR / ONNX_INT8_FILE).write_bytes(b"not an onnx model")
    backend, info = load_backend(folder, net, "onnx-int8")
    assert backend.name == "onnx" and "did not load" in str(info["note"])
    (folder / EXTRA_FILES_DIR / ONNX_FILE).write_bytes(b"\x00" * 10)
    backend, info = load_backend(folder, net, "auto")
    assert backend.name == "torch" and "serving torch" in str(info["note"])


def test_an_artifact_that_is_not_the_one_that_passed_is_refused(built, tmp_path):
    # A loadable file swapped in after registration (here the fp32 model as "int8"): its hash
    # differs from the one parity.json recorded, so auto serves the fp32 model that did pass.
    net, out, report = built

    def both_pass(parity):
        parity["checks"]["onnx"]["passed"] = parity["checks"]["onnx-int8"]["passed"] = True

    folder = _copy(out, tmp_path, both_pass)
    assert set(report.parity["sha256"]) == {"onnx", "onnx-int8"}
    shutil.copyfile(folder / EXTRA_FILES_DIR / ONNX_FILE, folder / EXTRA_FILES_DIR / ONNX_INT8_FILE)
    backend, info = load_backend(folder, net, "auto")
    assert backend.name == "onnx" and "not the file that passed parity" in str(info["note"])


def test_onnx_of_another_network_is_refused(built, tmp_path):
    _, out, _ = built
    other = _net(seed=7)  # artifacts of a different network: logits would not match

    def both_pass(parity):
        parity["checks"]["onnx"]["passed"] = parity["checks"]["onnx-int8"]["passed"] = True

    backend, info = load_backend(_copy(out, tmp_path, both_pass), other, "onnx")
    assert backend.name == "torch" and "differ" in str(info["note"])


def test_no_artifacts_serves_torch_and_unknown_choice_is_an_error(tmp_path):
    net = _net()
    backend, info = load_backend(tmp_path, net, "auto")
    assert backend.name == info["backend"] == "torch" and "no ONNX artifacts" in str(info["note"])
    assert info["int8_parity"] is None
    backend, info = load_backend(None, net, "torch")
    assert backend.name == "torch" and info["note"] == ""
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        load_backend(tmp_path, net, "tensorrt")
    assert BACKEND_CHOICES == ("auto", "torch", "onnx", "onnx-int8")


@pytest.mark.slow
def test_registered_version_carries_its_artifacts(trained_registry: TrainedRegistry, tmp_path):
    registry.use(registry.RegistryConfig(trained_registry.tracking_uri))
    folder, version = registry.download_model("deepfakenet", "champion", tmp_path / "dl")
    for name in (ONNX_FILE, ONNX_INT8_FILE, PARITY_FILE):
        assert (folder / EXTRA_FILES_DIR / name).is_file(), name
    assert version.tags["deepfakenet.onnx_parity"] == "pass"
    assert version.tags["deepfakenet.int8_parity"] in ("pass", "fail")
    run = MlflowClient(trained_registry.tracking_uri).get_run(version.run_id)
    assert run.data.tags["deepfakenet.export"] == "ok"
    metrics = run.data.metrics
    assert metrics["export/onnx_passed"] == 1.0 and "export/int8_passed" in metrics
    net = registry.load_net_from_dir(folder)
    backend, info = load_backend(folder, net, "onnx")
    assert backend.name == "onnx" and info["note"] == ""
    batch = torch.randn(3, 3, net.crop_size, net.crop_size)
    logits, features = backend.run(batch.numpy())
    scores = scores_from_outputs(net, torch.from_numpy(logits), torch.from_numpy(features))
    reference = score_batch(net, batch)
    torch.testing.assert_close(scores.prob_fake, reference.prob_fake, atol=1e-4, rtol=1e-4)
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_failed_export_still_registers_the_model(cfg_train, monkeypatch):
    from deepfakenet import export
    from deepfakenet.pipeline import train

    def boom(*args, **kwargs):
        raise RuntimeError("an op ORT cannot quantize")

    monkeypatch.setattr(export, "build_artifacts", boom)
    _, objects = train(cfg_train)
    version = objects["model_version"]
    client = MlflowClient(cfg_train.registry.tracking_uri)
    run = client.get_run(objects["run_id"])
    assert run.data.tags["deepfakenet.export"] == "failed"
    assert "cannot quantize" in run.data.tags["deepfakenet.export.error"]
    folder, _ = registry.download_model("deepfakenet", version.version)
    assert not (folder / EXTRA_FILES_DIR).exists()
    backend, info = load_backend(folder, registry.load_net_from_dir(folder), "auto")
    assert backend.name == "torch" and "no ONNX artifacts" in str(info["note"])
