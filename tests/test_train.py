"""End to end: the real train and evaluate jobs on tiny data against a temp MLflow store."""

import json

import mlflow
import pytest
from mlflow import MlflowClient

from deepfakenet.pipeline import evaluate, train
from deepfakenet.registry import CHAMPION, load_net

pytestmark = pytest.mark.slow


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_train_registers_logs_and_evaluates(cfg_train, cfg_evaluate, tmp_path):
    metrics, objects = train(cfg_train)

    for key in (
        "train/loss",
        "val/auroc",
        "val/auroc_best",
        "test/auroc",
        "test/ap",
        "test/ece",
        "test/f1",
    ):
        assert key in metrics, key
    client = MlflowClient(cfg_train.registry.tracking_uri)
    champion = client.get_model_version_by_alias("deepfakenet", CHAMPION)
    assert str(champion.version) == "1" and champion.run_id == objects["run_id"]
    assert champion.tags["data_version"] == "untracked"  # no data.dvc in this temp root

    run = client.get_run(objects["run_id"])
    assert run.data.params["data/crop_size"] == "32"
    assert run.data.params["trainer/max_epochs"] == "1"
    assert "val/auroc" in run.data.metrics and "test/auroc" in run.data.metrics
    assert run.data.tags["data_version"] == "untracked"
    assert run.inputs.dataset_inputs, "the data index is logged as an MLflow dataset input"
    artifacts = _artifacts(client, objects["run_id"])
    for name in (
        "config/config.yaml",
        "plots/test_roc.png",
        "plots/test_confusion_matrix.png",
        "plots/test_reliability.png",
        "plots/val_reliability_before.png",
        "plots/val_reliability_after.png",
    ):
        assert name in artifacts, (name, artifacts)
    for key in ("temperature", "threshold", "nll_before", "nll_after", "ece_before", "ece_after"):
        assert f"calibration/{key}" in run.data.metrics, key
    assert metrics["calibration/nll_after"] <= metrics["calibration/nll_before"] + 1e-9

    # The registered model loads back as the network, with hooks intact (pickle format), and
    # carries the temperature and threshold fitted on validation.
    mlflow.set_tracking_uri(cfg_train.registry.tracking_uri)
    net, version = load_net("deepfakenet", CHAMPION)
    assert str(version.version) == "1" and net.crop_size == 32
    assert net.backbone.layer4 is not None and callable(net.features)
    assert float(net.temperature) == pytest.approx(metrics["calibration/temperature"], rel=1e-5)
    assert float(net.threshold) == pytest.approx(metrics["calibration/threshold"], rel=1e-5)
    assert float(net.threshold) != 0.5, "the threshold is chosen on validation, not the default"

    # The tiny tree's splits are small: said in the log, the run's tags and the metrics file.
    test_rows = objects["datamodule"].split_index("test")
    n_real = int((test_rows["label"] == "real").sum())
    assert run.data.tags["deepfakenet.small_split"] == "true"
    assert run.data.tags["deepfakenet.test_n_real"] == str(n_real)
    assert int(run.data.tags["deepfakenet.test_n_fake"]) == len(test_rows) - n_real
    assert "min_test_per_class=30" in run.data.tags["deepfakenet.small_split.note"]
    written = json.loads((tmp_path / "reports" / "train" / "metrics.json").read_text())
    assert written["small_split"] is True and written["counts"]["test"]["real"] == n_real

    # A second run trains version 2; the champion stays on version 1.
    _, objects2 = train(cfg_train)
    assert str(objects2["model_version"].version) == "2"
    assert str(client.get_model_version_by_alias("deepfakenet", CHAMPION).version) == "1"

    cfg_evaluate.model_ref = "latest"
    cfg_evaluate.report_dir = str(tmp_path / "report")
    cfg_evaluate.robustness = True
    report = evaluate(cfg_evaluate)
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written == report and str(report["model_version"]) == "2"
    assert set(report["metrics"]) == {"auroc", "ap", "ece", "acc", "f1"}
    # Evaluation scores with the stored temperature and threshold of the registered model.
    net2, _ = load_net("deepfakenet", "2")
    assert report["threshold"] == pytest.approx(float(net2.threshold))
    assert report["temperature"] == pytest.approx(float(net2.temperature))
    conditions = [row["condition"] for row in report["robustness"]]
    assert conditions[0] == "native" and {"jpeg75", "downscale0.5", "full_image"} <= set(conditions)
    native = report["robustness"][0]
    assert native["auroc"] == pytest.approx(report["metrics"]["auroc"], abs=1e-6)
    assert native["acc"] == pytest.approx(report["metrics"]["acc"], abs=1e-6)
    assert (tmp_path / "report" / "robustness.md").read_text().startswith("| condition")
    assert report["n_samples"] == int((objects2["datamodule"].index["split"] == "test").sum())
    # The report says how many images per class it rests on, and that this is few.
    assert report["counts"] == {"real": n_real, "fake": len(test_rows) - n_real}
    assert report["small_split"] is True and report["min_test_per_class"] == 30
    assert any("small test split" in warning for warning in report["warnings"])
    for png in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
    # The job and the trainer's own test loop compute the same metrics on the same split.
    trainer_auroc = objects2["trainer"].callback_metrics["test/auroc"]
    assert report["metrics"]["auroc"] == pytest.approx(float(trainer_auroc), abs=1e-4)


def test_evaluate_unknown_model_is_a_clear_error(cfg_evaluate):
    from deepfakenet.errors import RegistryError

    cfg_evaluate.model_ref = "champion"
    with pytest.raises(RegistryError, match="no model"):
        evaluate(cfg_evaluate)


def test_a_split_large_enough_is_not_flagged(cfg_evaluate, trained_registry, tmp_path):
    cfg_evaluate.registry.tracking_uri = trained_registry.tracking_uri
    cfg_evaluate.report_dir = str(tmp_path / "report")
    cfg_evaluate.min_test_per_class = 1
    report = evaluate(cfg_evaluate)
    assert report["small_split"] is False and report["warnings"] == []
    assert min(report["counts"].values()) >= 1


def test_a_failed_training_run_is_marked_failed(cfg_train, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("calibration blew up")

    monkeypatch.setattr("deepfakenet.pipeline._calibrate", broken)
    with pytest.raises(RuntimeError, match="blew up"):
        train(cfg_train)
    client = MlflowClient(cfg_train.registry.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("deepfakenet").experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"], "never left RUNNING"


def test_a_tree_without_a_manifest_trains_with_its_groups_as_sources(cfg_train, tmp_path):
    # A user's own ImageFolder tree has no manifest.csv: content-hash split, and the first
    # folder below real/ is the source the per-source threshold is held on.
    import shutil

    from omegaconf import open_dict

    tree = tmp_path / "own_tree"
    shutil.copytree(cfg_train.paths.data_dir, tree)
    (tree / "manifest.csv").unlink()
    with open_dict(cfg_train):
        cfg_train.paths.data_dir = str(tree)
        cfg_train.data.data_dir = str(tree)
        cfg_train.register = False
    metrics, objects = train(cfg_train)
    index = objects["datamodule"].index
    assert (index["photo"] == "").all() and len(set(index["source"]) - {""}) > 1
    assert 0.0 < metrics["calibration/threshold"] < 1.0
