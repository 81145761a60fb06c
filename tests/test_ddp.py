"""``trainer=ddp`` run for real: two CPU processes (gloo) through the training CLI.

Lightning's DDP launcher starts the script once per process, so only the CLI exercises what a
user runs. What must come out is what one process gives: one MLflow run, one calibration, one
registered version, test metrics over the whole test split.
"""

import json
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from deepfakenet.pipeline import evaluate
from deepfakenet.registry import CHAMPION
from tests.conftest import clean_env, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ddp_on_two_cpu_processes_trains_like_one(tmp_path: Path, tiny_data: Path, cfg_evaluate):
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_cli(
        [
            sys.executable,
            "training/train.py",
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=2",
            "++trainer.limit_val_batches=2",
            "++trainer.num_sanity_val_steps=0",
            "++trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            f"paths.root_dir={tmp_path}",
            f"paths.data_dir={tiny_data}",
            f"registry.tracking_uri={tracking_uri}",
            "data.crop_size=32",
            "data.batch_size=16",
            "data.num_workers=0",
            "data.val_fraction=0.25",
            "data.test_fraction=0.25",
        ],
        clean_env(),
        timeout=600,
    )

    # Both processes ran the job: Lightning starts rank 1 with its own Hydra job name and log.
    logs = {p.name: p.read_text() for p in (tmp_path / "logs" / "train" / "runs").rglob("*.log")}
    assert "train_ddp_process_1.log" in logs, sorted(logs)
    assert "rank 1: fit done" in logs["train_ddp_process_1.log"]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("deepfakenet")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "rank 1 must not open a run of its own"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer/strategy"] == "ddp"
    assert run.data.params["trainer/devices"] == "2"
    versions = client.search_model_versions("name='deepfakenet'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    assert str(client.get_model_version_by_alias("deepfakenet", CHAMPION).version) == "1"
    # Calibrated once and tested once (one value each, not one per rank).
    for key in ("calibration/temperature", "calibration/threshold", "test/auroc", "test/acc"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
    assert len(client.get_metric_history(run.info.run_id, "val/auroc")) == 1  # one epoch

    # The logged test metrics are those of the registered model over the whole test split: the
    # single-process evaluation job scores every test image once and gets the same numbers.
    cfg_evaluate.model_ref = "1"
    cfg_evaluate.report_dir = str(tmp_path / "report")
    report = evaluate(cfg_evaluate)
    for key in ("auroc", "acc", "ece"):
        assert report["metrics"][key] == pytest.approx(run.data.metrics[f"test/{key}"], abs=1e-4)
    written = json.loads((tmp_path / "reports" / "train" / "metrics.json").read_text())
    assert written["run_id"] == run.info.run_id and written["model_version"] == "1"
    assert sum(written["counts"]["test"].values()) == report["n_samples"]
