"""MLflow's tracking/registry backend on a real PostgreSQL server (skipped only outside CI)."""

import pytest
from mlflow import MlflowClient

from deepfakenet.pipeline import train
from deepfakenet.registry import CHAMPION

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.integration]


def test_training_registers_into_a_postgres_backed_registry(cfg_train, pg_database, tmp_path):
    cfg_train.registry.tracking_uri = pg_database
    cfg_train.registry.artifact_location = str(tmp_path / "pg-artifacts")
    _, objects = train(cfg_train)
    client = MlflowClient(pg_database)
    champion = client.get_model_version_by_alias("deepfakenet", CHAMPION)
    assert champion.run_id == objects["run_id"]
    assert "test/auroc" in client.get_run(objects["run_id"]).data.metrics
