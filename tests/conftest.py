"""Shared fixtures: the real ``conf/`` composed and shrunk to a tiny run, isolated stores.

As in lightning-hydra-template, a session-scoped fixture composes the real config and a
function-scoped copy redirects every path into ``tmp_path``, so tests run the real jobs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from deepfakenet.data.fakes import FIXED_FAMILIES, FakePostConfig
from deepfakenet.data.sources import BUNDLED_SOURCES
from deepfakenet.data.synth import generate_dataset
from deepfakenet.store import PredictionRecord, new_id, utcnow

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
#: The PostgreSQL server the MLflow/store tests use (CI and dev machines run one; trust auth).
PG_URL = os.environ.get(
    "DEEPFAKENET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: MLflow's process-wide store settings, which ``mlflow.set_*_uri`` also exports to os.environ.
MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Never touch the user's MLflow store, BentoML home or DVC analytics from a test.

    ``registry.use`` sets MLflow's process-wide tracking and registry URIs, and MLflow exports
    them to ``os.environ`` for subprocesses; reset both afterwards, or the next test (and every
    service or job it starts) would talk to this test's store, perhaps a database since dropped.
    """
    for var in MLFLOW_URI_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield
    mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for var in MLFLOW_URI_VARS:
        os.environ.pop(var, None)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few dozen 32-48 px images of the embedded generator (both classes, all families)."""
    root = tmp_path_factory.mktemp("data")
    # The photos bundled with installed wheels: no registry download, cheap to decode.
    generate_dataset(
        root, n_real=48, n_fake=48, min_size=32, max_size=48, seed=1, sources=BUNDLED_SOURCES
    )
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


# --------------------------------------------------------------------------- served model


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TrainedRegistry:
    """A temp MLflow store holding a detector trained in this test session (v1, champion)."""

    root: Path
    tracking_uri: str
    run_id: str
    crop_size: int


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> TrainedRegistry:
    """Train once per session with the fast trainer and register it as the champion."""
    from deepfakenet.pipeline import train

    root = tmp_path_factory.mktemp("registry")
    cfg = _shrink(compose_config("train.yaml", ["trainer=fast"]), root, tiny_data)
    _, objects = train(cfg)
    GlobalHydra.instance().clear()
    return TrainedRegistry(root, cfg.registry.tracking_uri, objects["run_id"], cfg.data.crop_size)


def prediction_record(**overrides: object) -> PredictionRecord:
    """A valid prediction row for the store tests; ``overrides`` replace any field."""
    values: dict[str, object] = dict(
        id=new_id(),
        created_at=utcnow(),
        endpoint="predict",
        model_name="deepfakenet",
        model_version="1",
        prob_fake=0.8,
        label="fake",
        threshold=0.5,
        sha256="ab" * 32,
        width=64,
        height=48,
        format="PNG",
    )
    values.update(overrides)
    return PredictionRecord(**values)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a project subprocess, isolated from the developer's.

    No ``DEEPFAKENET_*`` settings or MLflow URIs (they would point a test at a real
    store), no global git config (signing hooks, hooks paths), no analytics.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFAKENET_")}
    env.update(
        DVC_NO_ANALYTICS="1",
        BENTOML_DO_NOT_TRACK="True",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    for var in MLFLOW_URI_VARS:
        env.pop(var, None)
    # The service chooses its own MLflow REST retry policy unless the operator sets one.
    for var in [v for v in env if v.startswith("MLFLOW_HTTP_REQUEST_")]:
        env.pop(var)
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Run a project command (cwd = repo root); fail the test with its output if it fails."""
    out = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out.stdout


def import_to_bentoml(registry: TrainedRegistry, bentoml_home: Path, ref: str = "champion") -> None:
    """``serving/import_model.py`` against the session's registry, into ``bentoml_home``."""
    env = clean_env(BENTOML_HOME=str(bentoml_home))
    run_cli(
        [
            sys.executable,
            "serving/import_model.py",
            f"paths.root_dir={registry.root}",
            f"registry.tracking_uri={registry.tracking_uri}",
            f"model_ref={ref}",
            "hydra.run.dir=" + str(registry.root / "import-logs"),
        ],
        env,
    )


#: The Makefile's SHUTDOWN_TIMEOUT: seconds uvicorn waits for open requests after SIGTERM.
SHUTDOWN_TIMEOUT_S = 3


@dataclass
class RunningService:
    """A ``bentoml serve`` subprocess of the real service on a free loopback port."""

    url: str
    home: Path
    store_url: str
    bentoml_home: Path
    log_file: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (for failure messages)."""
        return self.log_file.read_text(errors="replace")[-chars:]


def start_service(
    workdir: Path, bentoml_home: Path, extra_env: dict[str, str] | None = None
) -> RunningService:
    """Start the service from the repo root and wait until ``/readyz`` answers."""
    home = workdir / "var"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = clean_env(
        BENTOML_HOME=str(bentoml_home),
        DEEPFAKENET_HOME=str(home),
        DEEPFAKENET_FEATURE_FLUSH_SECONDS="0.5",
        **(extra_env or {}),
    )
    log_file = workdir / f"service-{port}.log"
    with log_file.open("wb") as log_handle:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                "serving.service:DeepfakeDetector",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # As `make serve`: SIGTERM stops the server even with stuck clients.
                "--timeout-graceful-shutdown",
                str(SHUTDOWN_TIMEOUT_S),
            ],
            cwd=ROOT,
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = RunningService(
        f"http://127.0.0.1:{port}",
        home,
        f"sqlite:///{home / 'store.db'}",
        bentoml_home,
        log_file,
        process,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited with {process.returncode}:\n{service.log_tail()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_service(service)
    pytest.fail(f"the service did not become ready in 180 s:\n{service.log_tail()}")


def stop_service(service: RunningService) -> None:
    """Stop the server's whole process group (BentoML starts worker processes)."""
    try:
        os.killpg(service.process.pid, signal.SIGTERM)
        service.process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGKILL)


#: The session service's video limits (tests/test_service_media.py breaks each of them).
SERVICE_VIDEO_LIMITS = {
    "DEEPFAKENET_MAX_VIDEO_BYTES": str(4 * 1024 * 1024),
    "DEEPFAKENET_MAX_VIDEO_SECONDS": "60",
    "DEEPFAKENET_MAX_VIDEO_FRAMES": "1000",
    "DEEPFAKENET_MAX_VIDEO_PIXELS": str(640 * 480),
    "DEEPFAKENET_VIDEO_DEADLINE_S": "20",
    "DEEPFAKENET_VIDEO_SAMPLE_FPS": "4",
}


@pytest.fixture(scope="session")
def service(
    tmp_path_factory: pytest.TempPathFactory, trained_registry: TrainedRegistry
) -> Iterator[RunningService]:
    """The real service, serving the session's champion; shared by the HTTP tests.

    Its C2PA trust anchor is the test CA of :mod:`tests.signing` (images signed under another
    CA are valid but untrusted); its video limits are small enough for tests to break each one.
    """
    from tests.signing import make_credentials

    workdir = tmp_path_factory.mktemp("service")
    anchors = workdir / "trust-anchors.pem"
    anchors.write_text(make_credentials().ca_pem)
    import_to_bentoml(trained_registry, workdir / "bentoml")
    running = start_service(
        workdir,
        workdir / "bentoml",
        {
            "DEEPFAKENET_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
            "DEEPFAKENET_MAX_PIXELS": str(4_000_000),
            "DEEPFAKENET_TRUST_ANCHORS": str(anchors),
            **SERVICE_VIDEO_LIMITS,
        },
    )
    yield running
    stop_service(running)


#: Fakes with glaring traces, so that a minute of CPU training gives a clearly competent model.
COMPETENT_STRENGTH = 30.0


@dataclass
class CompetentProject:
    """A git + DVC project with a model that learned the task (v1, champion, in BentoML)."""

    root: Path
    tracking_uri: str
    bentoml_home: Path
    run_id: str


@pytest.fixture(scope="session")
def competent_project(tmp_path_factory: pytest.TempPathFactory) -> CompetentProject:
    """Generate easy 32-40 px data, version it with DVC inside git, train and register v1.

    Shared by the Grad-CAM sanity check (read only) and the retraining loop (which promotes and
    rolls back, ending with v1 as champion again).
    """
    from deepfakenet.pipeline import train

    root = tmp_path_factory.mktemp("project")
    generate_dataset(
        root / "data",
        n_real=200,
        n_fake=200,
        min_size=32,
        max_size=40,
        seed=11,
        artifact_strength=COMPETENT_STRENGTH,
        sources=BUNDLED_SOURCES,
        # Easy on purpose (a model that learns in two epochs): fixed-kernel fakes only, no camera
        # traces on reals, no post-processing on fakes.
        families=FIXED_FAMILIES,
        camera_p=0.0,
        post=FakePostConfig(p_jpeg=0.0, p_resize=0.0, p_noise=0.0),
        progress=False,
    )
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "ci@example.invalid"],
        ["git", "config", "user.name", "CI"],
        [*dvc, "init", "-q"],
        [*dvc, "remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote")],
        [*dvc, "add", "data"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "data v1"],
    ):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, env=clean_env())

    cfg = compose_config(
        "train.yaml",
        [
            "trainer=fast",
            "trainer.max_epochs=6",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_val_batches=1.0",
            "data.augment.jpeg_p=0",
            "data.augment.blur_p=0",
        ],
    )
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.data_dir = str(root / "data")
        cfg.paths.dvc_file = str(root / "data.dvc")
        cfg.paths.output_dir = str(root / "output")
        cfg.registry.tracking_uri = f"sqlite:///{root}/mlflow.db"
        cfg.registry.artifact_location = str(root / "mlartifacts")
        cfg.data.crop_size, cfg.data.batch_size, cfg.data.num_workers = 32, 16, 0
        cfg.data.val_fraction = cfg.data.test_fraction = 0.25
        cfg.callbacks.early_stopping.patience = 10
    _, objects = train(cfg)
    GlobalHydra.instance().clear()
    registered = TrainedRegistry(root, cfg.registry.tracking_uri, objects["run_id"], 32)
    import_to_bentoml(registered, root / "bentoml")
    return CompetentProject(root, cfg.registry.tracking_uri, root / "bentoml", objects["run_id"])


# --------------------------------------------------------------------------- tracking server


@dataclass
class MlflowServer:
    """A real ``mlflow server`` on a loopback port: a SQL backend store, proxied artifacts.

    ``start`` again after ``stop`` is a restart on the same port and database (a recovery).
    Used by the tests and ``benchmarks/registry_outage.py``; it raises (no ``pytest.fail``).

    Attributes:
        backend_store_uri: SQLAlchemy URL of runs and registry (PostgreSQL, or sqlite).
        artifacts_dir: ``--artifacts-destination``: where the server keeps what clients upload
            to ``mlflow-artifacts:/`` (an experiment the server creates gets such a root).
        log_file: The server's output (appended across restarts).
        port: Loopback port.
    """

    backend_store_uri: str
    artifacts_dir: Path
    log_file: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        """The tracking URI clients use."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> float:
        """Start the server and wait until ``GET /health`` answers; the seconds it took."""
        env = clean_env(
            MLFLOW_DISABLE_TELEMETRY="true",
            # Otherwise MLflow 3.17 starts a job runner and seven huey consumer processes (and
            # leaves a folder in /dev/shm behind): nothing here runs server-side jobs.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        started = time.monotonic()
        with self.log_file.open("ab") as log_handle:
            self.process = subprocess.Popen(
                command,
                cwd=self.artifacts_dir.parent,
                env=env,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: uvicorn runs as a child
            )
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"mlflow server exited {code}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not ready in {timeout_s} s:\n{self.tail()}")

    def stop(self) -> float:
        """SIGTERM the server's process group (SIGKILL after 30 s); the seconds it took."""
        started = time.monotonic()
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            # The group's other members (uvicorn) may outlive the CLI process by a moment.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.process.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:  # a stray worker would hold the port the restart needs
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
            self.process = None
        return time.monotonic() - started

    def tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        return self.log_file.read_text(errors="replace")[-chars:]


@pytest.fixture
def mlflow_server(pg_database: str, tmp_path: Path) -> Iterator[MlflowServer]:
    """A running tracking server on a fresh PostgreSQL database, artifacts under tmp_path."""
    server = MlflowServer(pg_database, tmp_path / "server-artifacts", tmp_path / "mlflow.log")
    server.start()
    yield server
    server.stop()
