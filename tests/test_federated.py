"""Federated head updates (issue 13): the library parts, and Flower rounds on loopback.

The unit tests run in the service's environment (nothing in ``deepfakenet.federated`` imports
Flower). The rounds run Flower's Deployment Engine from the federated environment
(``make federated-setup``): a SuperLink and three SuperNodes on 127.0.0.1, SecAgg+ on. Without
that environment they skip, except in CI (``CI`` set), where its absence is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from deepfakenet import registry
from deepfakenet.data.datamodule import image_sources
from deepfakenet.data.split import scan_image_tree
from deepfakenet.features import FeatureRow, write_features
from deepfakenet.federated.demo import prepare_demo
from deepfakenet.federated.deployment import QUIET_ENV, toml_file
from deepfakenet.federated.head import (
    AdapterHead,
    HeadTraining,
    get_arrays,
    load_arrays,
    make_head,
    set_arrays,
    train_head,
)
from deepfakenet.federated.sites import Site, labelled_rows, non_iid_sites
from deepfakenet.store import Store, utcnow
from tests.conftest import (
    ROOT,
    TrainedRegistry,
    clean_env,
    import_to_bentoml,
    prediction_record,
    run_cli,
    start_service,
    stop_service,
)

FEDERATED_BIN = Path(os.environ.get("DEEPFAKENET_FEDERATED_BIN", ROOT / ".venv-federated" / "bin"))
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


# ------------------------------------------------------------------------------ the library


def test_heads_start_as_the_champion_and_exchange_their_arrays():
    torch.manual_seed(0)
    fc = nn.Linear(512, 2)
    x = torch.randn(8, 512)
    for kind in ("linear", "adapter"):
        head = make_head(kind, fc)
        assert torch.allclose(head(x), fc(x), atol=1e-6), kind  # round 0 is the champion
        copy = make_head(kind, nn.Linear(512, 2))
        set_arrays(copy, get_arrays(head))
        assert torch.equal(copy(x), head(x))
        with pytest.raises(ValueError, match="arrays"):
            set_arrays(copy, get_arrays(head)[:-1])
    assert isinstance(make_head("adapter", fc), AdapterHead)
    with pytest.raises(ValueError, match="head must be one of"):
        make_head("mlp", fc)


def test_train_head_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    features = rng.normal(size=(200, 512)).astype(np.float32)
    features[:, 0] += 3 * (2 * labels - 1)  # one direction separates the classes
    head = make_head("linear", nn.Linear(512, 2))
    before = (head(torch.as_tensor(features)).argmax(1).numpy() == labels).mean()
    train_head(head, features, labels, HeadTraining(epochs=20, lr=1e-2))
    after = (head(torch.as_tensor(features)).argmax(1).numpy() == labels).mean()
    assert after > 0.95 > before
    with pytest.raises(ValueError, match="512"):
        train_head(head, features[:, :10], labels, HeadTraining())


def test_sites_are_non_iid_by_source_and_family():
    index = pd.DataFrame(
        {
            "label": ["real"] * 6 + ["fake"] * 6,
            "source": ["a", "a", "b", "c", "c", "d"] + ["a"] * 6,
            "group": ["a", "a", "b", "c", "c", "d", "f1", "f2", "f3", "f1", "f4", "f5"],
        }
    )
    sites = non_iid_sites(index, 3)
    for label, key in (("real", "source"), ("fake", "group")):
        rows = index[index["label"] == label]
        per_name = rows.groupby(key).apply(lambda g: sites[g.index].nunique(), include_groups=False)
        assert (per_name == 1).all()  # a source (a family) lives at one site only
    assert set(sites) == {0, 1, 2}


def test_labelled_rows_one_per_image_of_one_model_version(tmp_path):
    site = Site("s", f"sqlite:///{tmp_path / 'records.db'}", str(tmp_path / "features"))
    assert labelled_rows(site, "1")[0].shape == (0, 512)  # a site with no records yet
    store = Store(site.store_url)
    vectors, rows = {}, []
    plan = [  # (prediction, image, model version, vote); no client keys: one client each
        ("p1", "a" * 64, "1", "fake"),
        ("p2", "a" * 64, "1", "real"),
        ("p3", "b" * 64, "1", "real"),
        ("p4", "c" * 64, "2", "fake"),  # another backbone's vector: not this version's row
        ("p5", "d" * 64, "1", None),  # scored, never labelled
        ("p6", "a" * 64, "1", "real"),  # image a: 2 real against 1 fake; its latest vector
        ("p7", "e" * 64, "1", "fake"),  # image e: a tie, skipped as retraining skips it
        ("p8", "e" * 64, "1", "real"),
    ]
    for i, (pid, sha, version, vote) in enumerate(plan):
        store.add_predictions([prediction_record(id=pid, sha256=sha, model_version=version)])
        vectors[pid] = np.full(512, i, np.float32)
        rows.append(FeatureRow(pid, version, utcnow(), vectors[pid]))
        if vote:
            store.add_feedback(pid, vote)
        time.sleep(0.01)
    store.close()
    write_features(site.features_dir, rows)
    features, labels = labelled_rows(site, "1")
    assert labels.tolist() == [0, 0]  # images a and b (by hash): both real
    assert features[:, 0].tolist() == [5.0, 2.0]  # a: p6's vector (its latest), b: p3's


def test_toml_files_hold_what_flower_reads(tmp_path):
    values = {"store-url": 'sqlite:////x/"y".db', "n": 3, "lr": 0.001, "on": True, "dp": False}
    assert tomllib.loads(toml_file(tmp_path / "c.toml", values).read_text()) == values


def test_a_registered_version_goes_through_the_same_promotion_gate(
    trained_registry, tiny_data, tmp_path
):
    """``retrain.py challenger=N``: the federated version is judged like a trained challenger.

    A version equal to the champion is kept (the rule wants an improvement); with
    ``require_improvement=false`` the same version is promoted and the alias moves.
    """
    shutil.copy(trained_registry.root / "mlflow.db", tmp_path / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.use(registry.RegistryConfig(tracking_uri=tracking_uri))
    net, _ = registry.load_net("deepfakenet", "1")
    import mlflow

    with mlflow.start_run(experiment_id=registry.experiment_id(MlflowClient(), "deepfakenet")):
        version = registry.log_and_register(net, "deepfakenet").version
    args = [
        sys.executable,
        "training/retrain.py",
        f"challenger={version}",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={tiny_data}",
        f"registry.tracking_uri={tracking_uri}",
        f"hydra.run.dir={tmp_path}/logs",
        'train_overrides=["data.val_fraction=0.25","data.test_fraction=0.25"]',
    ]
    client = MlflowClient(tracking_uri)
    run_cli([*args, f"report_dir={tmp_path}/kept"], clean_env())
    kept = json.loads((tmp_path / "kept" / "report.json").read_text())
    assert (kept["status"], kept["challenger_version"]) == ("kept", str(version)), kept
    assert kept["challenger_metrics"]["fixed_auroc"] == kept["champion_metrics"]["fixed_auroc"]
    assert str(registry.version_for_alias(client, "deepfakenet", "champion").version) == "1"
    run_cli(
        [*args, f"report_dir={tmp_path}/promoted", "promotion.require_improvement=false"],
        clean_env(),
    )
    promoted = json.loads((tmp_path / "promoted" / "report.json").read_text())
    assert promoted["status"] == "promoted", promoted
    champion = registry.version_for_alias(client, "deepfakenet", "champion")
    assert str(champion.version) == str(version)


# ------------------------------------------------------------------------------ Flower rounds


@pytest.fixture(scope="module")
def flower_bin() -> Path:
    """The federated environment's bin/ (skips without it, fails in CI)."""
    if not (FEDERATED_BIN / "flower-superlink").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the federated rounds but {FEDERATED_BIN} has no Flower")
        pytest.skip(f"no federated environment at {FEDERATED_BIN}: run `make federated-setup`")
    return FEDERATED_BIN


@dataclass
class Federation:
    """A copy of the session's registry (v1 champion) and three demo sites made with it."""

    root: Path
    tracking_uri: str
    sites_dir: Path
    sites: list[Site]

    def versions(self) -> list[str]:
        client = MlflowClient(self.tracking_uri)
        found = client.search_model_versions("name='deepfakenet'")
        return sorted((str(v.version) for v in found), key=int)


@pytest.fixture(scope="module")
def federation(trained_registry, tiny_data, tmp_path_factory) -> Federation:
    """Sites 0 and 1 hold labelled rows; site 2 has recorded nothing (it must be skipped)."""
    root = tmp_path_factory.mktemp("federation")
    shutil.copy(trained_registry.root / "mlflow.db", root / "mlflow.db")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    registry.use(registry.RegistryConfig(tracking_uri=tracking_uri))
    net, _ = registry.load_net("deepfakenet", "1")
    index = scan_image_tree(tiny_data, 0.25, 0.25)
    index["source"] = image_sources(index)
    sites = prepare_demo(net, "1", index, root / "sites", n_sites=3)
    shutil.rmtree(Path(sites[2].features_dir))
    Path(sites[2].store_url.removeprefix("sqlite:///")).unlink()
    return Federation(root, tracking_uri, root / "sites", sites)


def _federated_cli(fed: Federation, out: Path, *overrides: str) -> list[str]:
    return [
        str(FEDERATED_BIN / "python"),
        "training/federated.py",
        f"paths.root_dir={fed.root}",
        f"registry.tracking_uri={fed.tracking_uri}",
        f"registry.artifact_location={fed.root / 'mlartifacts'}",
        f"sites_dir={fed.sites_dir}",
        f"flower.app_dir={ROOT / 'federated'}",
        f"out_dir={out}",
        f"hydra.run.dir={out}/hydra",
        "run.num-rounds=2",
        "run.local-epochs=2",
        "flower.run_timeout_s=600",
        *overrides,
    ]


class ConnectionWatch:
    """Polls the sockets of a process and all its descendants until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.seen, self.envs = pid, set(), {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                processes = []
            for process in processes:
                try:
                    cmdline = process.cmdline()
                    if self.envs.get(process.pid, ((),))[0] != cmdline:  # new, or exec'd
                        self.envs[process.pid] = (cmdline, process.environ())
                    for conn in process.net_connections(kind="inet"):
                        remote = conn.raddr.ip if conn.raddr else None
                        self.seen.add((process.pid, conn.laddr.ip, remote, conn.status))
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.slow
@pytest.mark.integration
def test_a_secagg_round_on_three_supernodes(federation, flower_bin, tiny_data, tmp_path):
    """Two SecAgg+ rounds on three loopback SuperNodes; what the server saw; what it made."""
    fed, out = federation, tmp_path / "run"
    before = fed.versions()
    process = subprocess.Popen(
        _federated_cli(fed, out),
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watch = ConnectionWatch(process.pid)
    try:
        output, _ = process.communicate(timeout=900)
    finally:
        watch.stop()
        process.terminate()  # the job's SIGTERM handler stops its Flower processes
        process.wait(timeout=60)
    assert process.returncode == 0, output[-5000:]
    report = json.loads((out / "report.json").read_text())
    version = report["federated_version"]

    # Registered, tagged, and not aliased: the champion is unchanged.
    client = MlflowClient(fed.tracking_uri)
    assert fed.versions() == [*before, version]
    tags = client.get_model_version("deepfakenet", version).tags
    assert tags["deepfakenet.federated"] == "true"
    assert tags["deepfakenet.federated.base_version"] == "1"
    assert tags["deepfakenet.federated.secagg"] == "true"
    base_tags = client.get_model_version("deepfakenet", "1").tags
    assert tags["data_version"] == base_tags["data_version"]  # the backbone's lineage
    assert str(registry.version_for_alias(client, "deepfakenet", "champion").version) == "1"
    aliases = client.get_model_version("deepfakenet", version).aliases
    assert aliases == []

    # The site without rows was skipped with a clear line, and the others trained.
    logs = "".join(p.read_text() for p in (out / "secagg" / "flower" / "logs").glob("*.log"))
    logs += (out / "secagg" / "run.log").read_text()
    assert "site-2 has no labelled rows for model version 1: skipped in round 1" in logs
    audit = out / "secagg" / "site-audit"
    plain = {s: np.load(audit / s / "round2.npz") for s in ("site-0", "site-1")}
    assert not (audit / "site-2").exists()

    # SecAgg+'s aggregate is the weighted FedAvg of the sites' plain updates.
    aggregate = load_arrays(out / "secagg" / "head.npz")
    weights = {s: float(p["weight"]) for s, p in plain.items()}
    assert all(w > 0 for w in weights.values())
    expected = [
        sum(weights[s] * plain[s][f"arr_{i}"] for s in plain) / sum(weights.values())
        for i in range(len(aggregate))
    ]
    # SecAgg+ quantizes weight / max-weight * update to 2^22 steps over +-clipping-range
    # (federated/pyproject.toml): each site adds at most one step of error to the sum.
    step = 2 * 8.0 / 2**22 / (sum(weights.values()) / 1000.0)
    for got, want in zip(aggregate, expected, strict=True):
        assert np.abs(got - want).max() <= 3 * len(weights) * step
    solo = [plain["site-0"][f"arr_{i}"] for i in range(len(aggregate))]
    assert max(np.abs(a - b).max() for a, b in zip(aggregate, solo, strict=True)) > 1e-3

    # The server never received a site's update in the clear: what it got per site is masked.
    received = list((out / "secagg" / "received").glob("*.npz"))
    assert received
    updates = [p[f"arr_{i}"].ravel() for p in plain.values() for i in range(len(aggregate))]
    masked_seen = 0
    for path in received:
        with np.load(path) as reply:
            for key in reply.files:
                arr = reply[key].astype(np.float64).ravel()
                for update in (u for u in updates if u.size == arr.size):
                    assert not np.allclose(arr, update, atol=1e-2), path.name
                    if "masked_params" in key and arr.size > 100:  # the weight matrix
                        masked_seen += 1  # masks are uniform: no trace of the update is left
                        assert abs(np.corrcoef(arr, update)[0, 1]) < 0.2, path.name
    assert masked_seen >= 3 * 2 * len(plain)  # 3 sites' vectors x 2 rounds, each site's update

    # Offline and on loopback only: every socket of every process, every Flower process quiet.
    assert watch.seen, "no socket was observed: the watch saw nothing"
    outside = {s for s in watch.seen if s[1] not in LOOPBACK or (s[2] and s[2] not in LOOPBACK)}
    assert not outside, outside
    flower = [
        env
        for cmd, env in watch.envs.values()
        if any(Path(c).name.startswith(("flower-", "flwr")) for c in cmd[:2])
    ]
    assert flower
    for env in flower:
        assert {k: env.get(k) for k in QUIET_ENV} == QUIET_ENV

    # The comparison was made on the pooled test split.
    heads = {row["head"] for row in report["comparison"]}
    assert {"champion", "federated", "central", "site-0", "site-1"} <= heads

    # The registered version loads in the service and answers with its version.
    home = tmp_path / "bentoml"
    import_to_bentoml(TrainedRegistry(fed.root, fed.tracking_uri, "", 32), home, ref=version)
    service = start_service(tmp_path / "svc", home)
    try:
        assert httpx.get(f"{service.url}/model", timeout=30).json()["model_version"] == version
        image = next(tiny_data.rglob("*.png")).read_bytes()
        answer = httpx.post(
            f"{service.url}/predict", files={"image": ("x.png", image, "image/png")}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == version
    finally:
        stop_service(service)


@pytest.mark.slow
@pytest.mark.integration
def test_a_supernode_killed_mid_round_leaves_no_half_registered_version(
    federation, flower_bin, tmp_path
):
    """Kill site-1's SuperNode (and its app processes) once round 1 is under way.

    SecAgg+ may finish the round without it (the reconstruction threshold is 2 of 3), or the
    run may fail; either way it ends in bounded time, and the registry holds either nothing new
    or one whole version: tagged, its run finished, loadable. Never a version without its tags.
    """
    fed, out = federation, tmp_path / "run"
    registry.use(registry.RegistryConfig(fed.tracking_uri))
    before = fed.versions()
    process = subprocess.Popen(
        _federated_cli(fed, out, "run.num-rounds=1", "run.round-timeout=60"),
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = False
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None and not killed:
            if (out / "secagg" / "site-audit" / "site-0" / "round1.npz").exists():
                for child in psutil.Process(process.pid).children(recursive=True):
                    try:
                        cmd = " ".join(child.cmdline())
                    except psutil.Error:  # gone meanwhile, or a zombie app process
                        continue
                    if "flower-supernode" in cmd and "node-1.toml" in cmd:
                        os.killpg(child.pid, 9)
                        killed = True
            time.sleep(0.1)
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        process.terminate()  # the job's SIGTERM handler stops its Flower processes
        process.wait(timeout=60)
    assert killed, output[-5000:]
    client = MlflowClient(fed.tracking_uri)
    after = fed.versions()
    new = [v for v in after if v not in before]
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`deepfakenet.federated` = 'true'",
    )
    assert all(run.info.status in {"FINISHED", "FAILED"} for run in runs)
    if process.returncode == 0:  # the survivors finished the round: one whole version
        assert len(new) == 1, output[-5000:]
        version = client.get_model_version("deepfakenet", new[0])
        assert version.tags["deepfakenet.federated"] == "true"
        assert client.get_run(version.run_id).info.status == "FINISHED"
        registry.load_net("deepfakenet", new[0])
    else:  # the run failed: nothing was registered
        assert new == [], output[-5000:]
        assert "registered nothing" in output
    assert str(registry.version_for_alias(client, "deepfakenet", "champion").version) == "1"
