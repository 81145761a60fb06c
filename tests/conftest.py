"""Shared fixtures: the real ``conf/`` composed and shrunk to a tiny run, isolated stores.

As in lightning-hydra-template, a session-scoped fixture composes the real config and a
function-scoped copy redirects every path into ``tmp_path``, so tests run the real jobs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from deepfakenet.data.synth import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
#: The PostgreSQL server the MLflow/store tests use (CI and dev machines run one; trust auth).
PG_URL = os.environ.get(
    "DEEPFAKENET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never touch the user's MLflow store, BentoML home or DVC analytics from a test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few dozen 32-48 px images of the embedded generator (both classes, all families)."""
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root, n_real=48, n_fake=48, min_size=32, max_size=48, seed=1)
    return root


def compose_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<name>`` the way ``@hydra.main`` would, without the hydra node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=name, overrides=overrides or [])


def _shrink(cfg: DictConfig, tmp_path: Path, data_dir: Path) -> DictConfig:
    """Point every path at tmp_path and make the data loaders tiny."""
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(tmp_path / "output")
        cfg.registry.tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
        cfg.data.crop_size = 32
        cfg.data.batch_size = 16
        cfg.data.num_workers = 0
        cfg.data.val_fraction = 0.25
        cfg.data.test_fraction = 0.25
    return cfg


@pytest.fixture
def cfg_train(tmp_path: Path, tiny_data: Path) -> Iterator[DictConfig]:
    """``conf/train.yaml`` with the fast trainer, a temp sqlite MLflow store and tiny data."""
    cfg = compose_config("train.yaml", ["trainer=fast", "trainer.limit_train_batches=2"])
    yield _shrink(cfg, tmp_path, tiny_data)
    GlobalHydra.instance().clear()


@pytest.fixture
def cfg_evaluate(tmp_path: Path, tiny_data: Path) -> Iterator[DictConfig]:
    """``conf/evaluate.yaml`` against the same temp store and data as ``cfg_train``."""
    cfg = compose_config("evaluate.yaml")
    yield _shrink(cfg, tmp_path, tiny_data)
    GlobalHydra.instance().clear()


def _pg_reachable(url: str) -> bool:
    host_port = url.split("@", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 5432)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); its SQLAlchemy URL.

    Skips with the reason when no server answers, except in CI (``CI`` set), where the server is
    part of the environment and its absence is a failure, not a skip.
    """
    if not _pg_reachable(PG_URL):
        if os.environ.get("CI"):
            pytest.fail(f"CI must test against PostgreSQL but none answers at {PG_URL}")
        pytest.skip(f"no PostgreSQL server at {PG_URL} (set DEEPFAKENET_TEST_PG_URL)")
    import uuid

    import sqlalchemy as sa

    name = f"deepfakenet_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
