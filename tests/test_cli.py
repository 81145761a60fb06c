"""The jobs as a user runs them: exit codes and what they print (see ``deepfakenet.cli``).

Each test runs the real command-line job in a subprocess, as cron or a person would: an expected
refusal is one line on stderr and exit 2 (75 while the lock is held), never a traceback; an
unexpected error (a registry that cannot be reached) keeps its traceback and exits 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import filelock
import mlflow
import pytest
from mlflow import MlflowClient
from PIL import Image

from deepfakenet import registry
from deepfakenet.data.sources import BUNDLED_SOURCES
from deepfakenet.data.synth import generate_dataset
from deepfakenet.store import ImageArchive, Store
from tests.conftest import CONF_DIR, ROOT, clean_env, free_port, prediction_record

pytestmark = pytest.mark.slow


def job(
    script: str, root: Path, *args: str, flags: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``training/<script>.py`` against the project folder ``root`` (logs under it).

    ``flags`` (Hydra's ``--config-path`` ...) go first: argparse takes no flag after overrides.
    """
    command = [
        sys.executable,
        f"training/{script}.py",
        *flags,
        *args,
        f"paths.root_dir={root}",
        f"hydra.run.dir={root}/logs/{script}",
    ]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], name: str, code: int, says: str):
    """Exit ``code``, exactly one ``<name>: ...`` line on stderr saying ``says``, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: ")]
    assert len(lines) == 1, result.stderr[-4000:]
    assert says in lines[0], lines[0]


@dataclass
class Project:
    root: Path
    tracking_uri: str


@pytest.fixture(scope="module")
def champion_only(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A registry whose only version is the champion: nothing to roll back to."""
    from deepfakenet.models import DeepfakeNet

    root = tmp_path_factory.mktemp("champion-only")
    uri = f"sqlite:///{root}/mlflow.db"
    client = registry.use(registry.RegistryConfig(uri, str(root / "mlartifacts")))
    experiment = registry.experiment_id(client, "deepfakenet", str(root / "mlartifacts"))
    with mlflow.start_run(experiment_id=experiment):
        version = registry.log_and_register(DeepfakeNet(crop_size=32), "deepfakenet")
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, version.version)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    return Project(root, uri)


def test_rollback_without_previous_is_one_line(champion_only):
    result = job(
        "rollback", champion_only.root, f"registry.tracking_uri={champion_only.tracking_uri}"
    )
    assert_refused(result, "rollback", 2, "nothing to roll back to")
    client = MlflowClient(champion_only.tracking_uri)
    assert str(client.get_model_version_by_alias("deepfakenet", "champion").version) == "1"


def test_rollback_while_a_retraining_run_holds_the_lock(champion_only):
    with filelock.FileLock(str(champion_only.root / ".retrain.lock")):
        result = job(
            "rollback", champion_only.root, f"registry.tracking_uri={champion_only.tracking_uri}"
        )
    assert_refused(result, "rollback", 75, "try the rollback again later")


def test_a_registry_outage_is_an_error_with_its_traceback(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: like a tracking server down
    result = job(
        "rollback",
        tmp_path,
        f"registry.tracking_uri={dead}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "Traceback" in output and "MlflowException" in output
    assert "nothing to roll back to" not in output, "an outage is not 'no champion'"


def test_evaluate_with_nothing_registered(tmp_path, tiny_data):
    result = job(
        "evaluate",
        tmp_path,
        f"paths.data_dir={tiny_data}",
        f"registry.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    assert_refused(result, "evaluate", 2, "no model models:/deepfakenet@champion")


def test_train_on_a_tree_without_fakes(tmp_path):
    data = tmp_path / "data"
    generate_dataset(
        data, 6, 6, min_size=32, max_size=40, seed=3, sources=BUNDLED_SOURCES, progress=False
    )
    shutil.rmtree(data / "fake")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = job("train", tmp_path, f"paths.data_dir={data}", f"registry.tracking_uri={uri}")
    assert_refused(result, "train", 2, "has no 'fake/' folder")
    assert not MlflowClient(uri).search_runs(["0"]), "refused before an MLflow run was made"


def _one_label(tmp_path: Path) -> None:
    """A store with one feedback vote on an archived image (what the service would leave)."""
    store = Store(f"sqlite:///{tmp_path}/var/store.db")
    record = prediction_record(sha256="ab" * 32)
    store.add_predictions([record])
    store.add_feedback(record.id, "real")
    store.close()
    ImageArchive(tmp_path / "var" / "images").put(record.sha256, Image.new("RGB", (8, 8)))


def _retrain(
    tmp_path: Path, *args: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return job(
        "retrain",
        tmp_path,
        f"registry.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"store.home={tmp_path}/var",
        "collect.min_new_labels=1",
        "notify.service_url=null",
        *args,
        flags=flags,
    )


def test_retrain_without_a_champion(tmp_path):
    _one_label(tmp_path)
    result = _retrain(tmp_path)
    assert_refused(result, "retrain", 2, "no model models:/deepfakenet@champion")
    assert not (tmp_path / "data").exists(), "nothing was written to the data tree"
    unused = Store(f"sqlite:///{tmp_path}/var/store.db").feedback_frame(unused_only=True)
    assert len(unused) == 1, "the feedback waits for the next run"


def test_retrain_while_another_run_holds_the_lock(tmp_path):
    _one_label(tmp_path)
    with filelock.FileLock(str(tmp_path / ".retrain.lock")):
        result = _retrain(tmp_path)
    assert_refused(result, "retrain", 75, "another retraining run holds")


def test_a_typo_in_the_config_file_is_refused(tmp_path):
    """``promotion.max_dorp`` in conf/retrain.yaml was silently ignored; now it is refused."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    text = (conf / "retrain.yaml").read_text()
    assert "  max_drop: 0.01\n" in text
    (conf / "retrain.yaml").write_text(text.replace("  max_drop: 0.01\n", "  max_dorp: 0.5\n"))
    _one_label(tmp_path)
    result = _retrain(tmp_path, flags=(f"--config-path={conf}",))
    assert_refused(result, "retrain", 2, "unknown key 'promotion.max_dorp'")
    assert "max_drop" in result.stderr, "the message names the keys that exist"


def test_a_misspelt_key_on_the_command_line_is_refused_by_hydra(tmp_path):
    """Hydra refuses it before the job runs (exit 1, its own message): nothing happens."""
    result = _retrain(tmp_path, "promotion.max_dorp=0.5")
    assert result.returncode == 1
    assert "max_dorp" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists(), "no job ran"


def test_bad_train_overrides_are_refused(tmp_path):
    _one_label(tmp_path)
    result = _retrain(tmp_path, 'train_overrides=["experiment=no_such_experiment"]')
    assert_refused(result, "retrain", 2, "train_overrides")


def test_a_distributed_challenger_is_refused(tmp_path):
    """DDP would start the whole retraining job again in each extra process: refused first."""
    _one_label(tmp_path)
    result = _retrain(tmp_path, 'train_overrides=["trainer=ddp"]')
    assert_refused(result, "retrain", 2, "in one process")
    assert "trainer.devices=1" in result.stderr
    assert not (tmp_path / "mlflow.db").exists(), "refused before the registry is touched"


def test_a_hydra_multirun_sweeps_every_value(tmp_path):
    # `train.py -m seed=0,1,2` once died resolving the sweep folder (paths.log_dir needs the
    # runtime cwd, which a sweep does not have yet); the same sweep, on the cheapest job.
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "generate.py"),
            "-m",
            "synth.n_real=2",
            "synth.n_fake=2,3",
            "synth.min_size=32",
            "synth.max_size=32",
            "synth.sources=[skimage]",
            f"paths.data_dir={tmp_path}/data_${{synth.n_fake}}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for n_fake in (2, 3):
        assert len(list((tmp_path / f"data_{n_fake}").rglob("*.png"))) == 2 + n_fake
    assert len(list((tmp_path / "logs" / "generate" / "multiruns").glob("*/[01]"))) == 2
