"""An HTTP tracking server as the shared registry (issue 16): a real ``mlflow server`` on a
loopback port, PostgreSQL behind it, artifacts proxied to a local folder.

One flow, because each step needs the previous one: train and register through the server,
import and serve the champion, promote a new version and see the service follow, stop the
server while clients keep scoring, restart it and see the service follow again.
"""

import re
import time

import httpx
import mlflow
import pytest
import torch
from mlflow import MlflowClient

from deepfakenet import registry
from deepfakenet.pipeline import train
from tests.conftest import (
    MlflowServer,
    TrainedRegistry,
    import_to_bentoml,
    start_service,
    stop_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.integration]

POLL_S = 0.5
#: Longest wait for the service to follow a promotion (download + load over HTTP, 2 busy cores).
FOLLOW_S = 60


def png() -> bytes:
    """A small RGB PNG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


def served_version(url: str) -> dict:
    return httpx.get(f"{url}/model", timeout=10).json()


def wait_for_version(url: str, version: str, timeout_s: float = FOLLOW_S) -> float:
    """Poll ``GET /model`` until it serves ``version``; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if served_version(url)["model_version"] == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"the service still serves {served_version(url)} after {timeout_s} s")


def register_copy(uri: str, seed: int) -> str:
    """Register the champion's network, perturbed, as a new version; its number."""
    client = registry.use(registry.RegistryConfig(uri))
    net, _ = registry.load_net("deepfakenet", registry.CHAMPION)
    torch.manual_seed(seed)
    with torch.no_grad():
        net.backbone.fc.bias.add_(torch.randn_like(net.backbone.fc.bias))
    experiment = registry.experiment_id(client, "deepfakenet")
    with mlflow.start_run(experiment_id=experiment):
        version = registry.log_and_register(net, "deepfakenet", tags={"data_version": "copy"})
    return str(version.version)


def test_a_service_follows_the_champion_through_a_tracking_server_and_rides_out_its_outage(
    cfg_train, mlflow_server: MlflowServer, tmp_path
):
    uri = mlflow_server.url
    cfg_train.registry.tracking_uri = uri
    _, objects = train(cfg_train)

    # The server chose the artifact root: nothing was written to the trainer's local folder.
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("deepfakenet")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment
    assert not (tmp_path / "mlartifacts").exists()
    assert any(mlflow_server.artifacts_dir.rglob("MLmodel")), "artifacts went through the proxy"
    v1 = client.get_model_version_by_alias("deepfakenet", registry.CHAMPION)
    assert v1.run_id == objects["run_id"]

    import_to_bentoml(TrainedRegistry(tmp_path, uri, objects["run_id"], 32), tmp_path / "bentoml")
    service = start_service(
        tmp_path / "service",
        tmp_path / "bentoml",
        {"DEEPFAKENET_MLFLOW_TRACKING_URI": uri, "DEEPFAKENET_REGISTRY_POLL_SECONDS": str(POLL_S)},
    )
    image = png()
    try:
        info = served_version(service.url)
        assert info["model_version"] == str(v1.version) and info["registry"] == "ok", info

        # A promotion reaches the running service through the server.
        v2 = register_copy(uri, seed=2)
        registry.promote(client, "deepfakenet", v2)
        follow_s = wait_for_version(service.url, v2)
        print(f"followed the promotion of v{v2} in {follow_s:.2f} s")

        # The server goes away: scoring goes on, the outage is reported (and logged once).
        # What the service logs from here on (an earlier transient error is not this outage's).
        offset = len(service.log_file.read_text(errors="replace"))
        mlflow_server.stop()
        statuses, latencies = [], []
        with httpx.Client(base_url=service.url, timeout=30) as http:
            started = time.monotonic()
            while time.monotonic() - started < 8 * POLL_S + 2:
                t0 = time.perf_counter()
                answer = http.post("/predict", files={"image": ("x.png", image, "image/png")})
                latencies.append(time.perf_counter() - t0)
                statuses.append(answer.status_code)
                assert answer.json().get("model_version") == v2, answer.text
        assert set(statuses) == {200}, statuses
        info = served_version(service.url)
        assert info["model_version"] == v2 and info["registry"] == "failing", info
        assert info["registry_failing_since"], info
        log = service.log_file.read_text(errors="replace")[offset:]
        assert log.count("checking deepfakenet@champion failed") == 1, log[-6000:]
        # A refused connection is one message however often it is polled (no per-poll lines).
        assert len(re.findall("checking deepfakenet@champion still fails", log)) <= 2, log[-6000:]
        assert "Retrying (Retry(" not in log, "MLflow's client must not retry (nor log) per poll"
        print(
            f"outage: {len(statuses)} requests, all 200, "
            f"max {max(latencies) * 1000:.0f} ms; registry {info['registry']}"
        )

        # The server returns (same port, same database): the service answers to it again.
        mlflow_server.start()
        registry.promote(client, "deepfakenet", str(v1.version))
        recover_s = wait_for_version(service.url, str(v1.version))
        info = served_version(service.url)
        assert info["registry"] == "ok" and info["registry_failing_since"] is None, info
        assert "the registry answers again for deepfakenet@champion" in service.log_tail(1_000_000)
        print(f"followed a promotion after the restart in {recover_s:.2f} s")
    finally:
        stop_service(service)
