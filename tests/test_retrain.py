"""The feedback loop end to end: a real git + DVC project, MLflow sqlite store and the service.

The tests are one scenario, in file order, on one project (module-scoped): each builds on the
registry, data and store state the previous one left.

train v1 -> score images through the service -> post corrected feedback -> retrain -> a new
``data.dvc`` hash, MLflow v2 promoted, the running service answers with v2; a challenger made to
lose is not promoted; below ``min_new_labels`` nothing happens; two concurrent runs: one
proceeds, one exits 75; rollback restores the previous champion.
"""

import io
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from deepfakenet import registry
from deepfakenet.data.fakes import FAKE_FAMILIES
from deepfakenet.data.synth import random_photo_crop
from deepfakenet.lineage import data_version
from deepfakenet.store import Store
from tests.conftest import (
    COMPETENT_STRENGTH,
    ROOT,
    RunningService,
    clean_env,
    run_cli,
    start_service,
    stop_service,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "retrain-test-token"
#: The challenger's training in these tests: a few quick epochs on the tiny tree.
FAST = [
    "trainer=fast",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1.0",
    "data.crop_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "data.test_fraction=0.25",
]


def hydra_list(key: str, items: list[str]) -> str:
    """A Hydra command-line override setting ``key`` to a list of override strings."""
    return f"{key}=[" + ",".join(f'"{item}"' for item in items) + "]"


@dataclass
class Project:
    root: Path
    tracking_uri: str
    service: RunningService

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=True
        ).stdout

    def retrain(self, *overrides: str) -> subprocess.CompletedProcess[str]:
        args = [
            sys.executable,
            "training/retrain.py",
            f"paths.root_dir={self.root}",
            f"registry.tracking_uri={self.tracking_uri}",
            f"store.home={self.service.home}",
            f"hydra.run.dir={self.root}/logs/retrain/{time.monotonic_ns()}",
            f"report_dir={self.root}/reports/retrain/{time.monotonic_ns()}",
            f"notify.service_url={self.service.url}",
            f"notify.admin_token={TOKEN}",
            hydra_list("train_overrides", FAST),
            *overrides,
        ]
        return subprocess.run(
            args,
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def model_info(self) -> dict:
        return httpx.get(f"{self.service.url}/model", timeout=30).json()


@pytest.fixture(scope="module")
def project(competent_project) -> Project:
    service = start_service(
        competent_project.root / "svc",
        competent_project.bentoml_home,
        {
            "DEEPFAKENET_MLFLOW_TRACKING_URI": competent_project.tracking_uri,
            "DEEPFAKENET_REGISTRY_POLL_SECONDS": "1",
            "DEEPFAKENET_ADMIN_TOKEN": TOKEN,
        },
    )
    yield Project(competent_project.root, competent_project.tracking_uri, service)
    stop_service(service)


def _new_images(n: int, seed: int) -> list[tuple[bytes, str]]:
    """Images the model never saw, half real crops, half fakes of every family."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        crop = random_photo_crop("skimage", ["astronaut", "coffee", "chelsea"][i % 3], 36, rng)
        label = "fake" if i % 2 else "real"
        if label == "fake":
            crop = FAKE_FAMILIES[list(FAKE_FAMILIES)[i % 4]](crop, rng, strength=COMPETENT_STRENGTH)
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="PNG")
        out.append((buf.getvalue(), label))
    return out


def _score_and_correct(project: Project, n: int, seed: int) -> list[str]:
    """Score new images through the service and send their true labels as feedback."""
    ids = []
    with httpx.Client(base_url=project.service.url, timeout=60) as client:
        for data, label in _new_images(n, seed):
            answer = client.post("/predict", files={"image": ("x.png", data, "image/png")})
            assert answer.status_code == 200, (answer.text, project.service.log_tail())
            pred = answer.json()
            fb = client.post(
                "/feedback",
                json={"prediction_id": pred["prediction_id"], "label": label, "comment": "truth"},
            )
            fb.raise_for_status()
            ids.append(fb.json()["feedback_id"])
    return ids


def _report(result: subprocess.CompletedProcess[str], root: Path) -> dict:
    reports = sorted(
        (root / "reports" / "retrain").glob("*/report.json"), key=lambda p: p.stat().st_mtime
    )
    assert reports, result.stderr[-3000:]
    return json.loads(reports[-1].read_text())


def _wait_for_version(project: Project, version: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        info = project.model_info()
        if info["model_version"] == version:
            return info
        time.sleep(0.5)
    pytest.fail(f"the service still serves {project.model_info()} after {seconds} s")


def test_v1_is_served_and_competent(project):
    info = project.model_info()
    assert info["model_version"] == "1" and info["data_version"] == data_version(
        project.root / "data.dvc"
    )
    client = MlflowClient(project.tracking_uri)
    run = client.get_run(client.get_model_version("deepfakenet", "1").run_id)
    # The loss test below needs a champion clearly better than chance.
    assert run.data.metrics["test/auroc"] >= 0.75, run.data.metrics


def test_below_min_new_labels_nothing_happens(project):
    _score_and_correct(project, 4, seed=100)
    dvc_before = (project.root / "data.dvc").read_text()
    runs_before = len(MlflowClient(project.tracking_uri).search_runs(["1"]))
    result = project.retrain("collect.min_new_labels=1000")
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(result, project.root)
    assert report["status"] == "nothing_to_do" and report["new_labels"] == 4
    assert (project.root / "data.dvc").read_text() == dvc_before
    assert len(MlflowClient(project.tracking_uri).search_runs(["1"])) == runs_before
    assert len(Store(project.service.store_url).feedback_frame(unused_only=True)) == 4


def test_concurrent_runs_one_promotes_one_exits(project):
    feedback_ids = _score_and_correct(project, 36, seed=200)
    v_before = data_version(project.root / "data.dvc")
    commits_before = project.git("rev-list", "--count", "HEAD").strip()
    rule = (
        "collect.min_new_labels=10",
        "promotion.max_drop=0.25",
        "promotion.require_improvement=false",
    )
    stop, statuses = threading.Event(), []

    def traffic() -> None:  # clients keep scoring while the champion is swapped
        img, _ = _new_images(1, seed=555)[0]
        with httpx.Client(base_url=project.service.url, timeout=60) as client:
            while not stop.is_set():
                answer = client.post("/predict", files={"image": ("x.png", img, "image/png")})
                statuses.append((answer.status_code, answer.json().get("model_version")))

    background = threading.Thread(target=traffic, daemon=True)
    background.start()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: project.retrain(*rule), range(2)))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 75], [r.stderr[-2000:] for r in results]
    loser = next(r for r in results if r.returncode == 75)
    assert "another retraining run holds" in loser.stderr + loser.stdout
    winner = next(r for r in results if r.returncode == 0)
    report = _report(winner, project.root)
    assert report["status"] == "promoted", report
    assert report["new_labels"] == 40  # the 4 below the threshold earlier count now too
    # Both models were compared on the original test images and, paired, on the feedback ones.
    assert report["reasons"][-1].startswith("decision: promote"), report["reasons"]
    for role in ("champion", "challenger"):
        metrics = report[f"{role}_metrics"]
        assert metrics["fixed_n_real"] > 0 and metrics["fixed_n_fake"] > 0
        assert metrics["fixed_auroc"] is not None
    assert report["feedback"]["items"] == report["challenger_metrics"]["feedback_items"]

    # A new DVC data version, committed to git and pushed to the remote.
    v_after = data_version(project.root / "data.dvc")
    assert v_after != v_before and report["data_version"] == v_after
    assert int(project.git("rev-list", "--count", "HEAD")) == int(commits_before) + 1
    assert project.git("status", "--porcelain", "data.dvc").strip() == ""
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "-c"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "new" not in status, status
    assert len(list((project.root / "data").glob("*/feedback/*.png"))) == 40

    # MLflow: v2 registered from the new data and promoted; v1 is kept as previous.
    client = MlflowClient(project.tracking_uri)
    champion = registry.version_for_alias(client, "deepfakenet", registry.CHAMPION)
    previous = registry.version_for_alias(client, "deepfakenet", registry.PREVIOUS)
    assert (str(champion.version), str(previous.version)) == ("2", "1")
    assert champion.tags["data_version"] == v_after
    jobs = registry.retrain_runs_frame(client, "deepfakenet")
    assert jobs.iloc[0]["decision"] == "promoted"
    assert client.get_run(champion.run_id).data.tags["mlflow.parentRunId"] == jobs.iloc[0]["run_id"]

    # The store: every feedback row is marked used; the service answers with v2.
    store = Store(project.service.store_url)
    used = store.feedback_frame().set_index("feedback_id").loc[feedback_ids]
    assert used["used_at"].notna().all() and used["used_by"].str.contains(v_after).all()
    info = _wait_for_version(project, "2")
    assert info["data_version"] == v_after and info["alias"] == "champion"
    time.sleep(1)
    stop.set()
    background.join(timeout=60)
    codes = {code for code, _ in statuses}
    assert codes == {200}, f"requests failed while the model was swapped: {codes}"
    assert {version for _, version in statuses} == {"1", "2"}, "traffic spanned the swap"
    img, _ = _new_images(1, seed=999)[0]
    answer = httpx.post(f"{project.service.url}/predict", files={"image": ("x.png", img)}).json()
    assert answer["model_version"] == "2"


def test_a_losing_challenger_is_not_promoted(project):
    _score_and_correct(project, 12, seed=300)
    dvc_before = data_version(project.root / "data.dvc")
    # A broken recipe (a diverging learning rate, from scratch) must not reach production.
    result = project.retrain(
        "collect.min_new_labels=10",
        "init_from_champion=false",
        hydra_list("train_overrides", [*FAST, "model.optimizer.lr=50.0"]),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(result, project.root)
    assert report["status"] == "kept", report
    # Diverged weights score worse, or NaN (no metric at all): either way the rule refuses.
    ours, theirs = (report[f"{r}_metrics"]["fixed_auroc"] for r in ("challenger", "champion"))
    assert ours is None or ours < theirs - 0.01, report
    assert report["reasons"][-1].startswith("decision: keep the champion"), report["reasons"]
    assert data_version(project.root / "data.dvc") != dvc_before, "the data version still moves"
    client = MlflowClient(project.tracking_uri)
    assert str(registry.version_for_alias(client, "deepfakenet", "champion").version) == "2"
    assert registry.retrain_runs_frame(client, "deepfakenet").iloc[0]["decision"] == "kept"
    time.sleep(2)  # longer than the poll interval: the service must still serve v2
    assert project.model_info()["model_version"] == "2"
    assert report["challenger_version"] == "3"


def test_a_crash_midway_changes_nothing_that_serves(project):
    feedback_ids = _score_and_correct(project, 12, seed=400)
    client = MlflowClient(project.tracking_uri)
    versions_before = len(client.search_model_versions("name = 'deepfakenet'"))
    # The challenger's training fails (an unknown optimizer): exit 1, champion untouched,
    # feedback still unused (the next run picks it up), the job run marked FAILED.
    result = project.retrain(
        "collect.min_new_labels=10",
        hydra_list("train_overrides", [*FAST, "model.optimizer._target_=torch.optim.NoSuchOpt"]),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "champion is unchanged" in result.stderr + result.stdout
    assert "Traceback" in result.stderr + result.stdout, "an unexpected error keeps its traceback"
    assert _report(result, project.root)["status"] == "failed"
    assert str(registry.version_for_alias(client, "deepfakenet", "champion").version) == "2"
    assert len(client.search_model_versions("name = 'deepfakenet'")) == versions_before
    unused = Store(project.service.store_url).feedback_frame(unused_only=True)
    assert set(feedback_ids) <= set(unused["feedback_id"])
    assert registry.retrain_runs_frame(client, "deepfakenet").iloc[0]["status"] == "FAILED"
    assert project.model_info()["model_version"] == "2"


def test_rollback_restores_the_previous_champion(project):
    env = clean_env()
    run_cli(
        [
            sys.executable,
            "training/rollback.py",
            f"paths.root_dir={project.root}",
            f"registry.tracking_uri={project.tracking_uri}",
            f"notify.service_url={project.service.url}",
            f"notify.admin_token={TOKEN}",
            f"hydra.run.dir={project.root}/logs/rollback",
        ],
        env,
    )
    client = MlflowClient(project.tracking_uri)
    assert str(registry.version_for_alias(client, "deepfakenet", "champion").version) == "1"
    assert str(registry.version_for_alias(client, "deepfakenet", "previous").version) == "2"
    assert project.model_info()["model_version"] == "1"  # reloaded through the admin route


def test_admin_reload_needs_the_token(project):
    url = f"{project.service.url}/admin/reload"
    assert httpx.post(url, timeout=30).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    ok = httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
