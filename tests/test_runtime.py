"""Following the registry's champion: swap on demand and by polling, never on a bad alias, and
keep serving through a registry outage."""

import time

import mlflow
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from deepfakenet import registry
from deepfakenet.errors import RegistryError
from deepfakenet.models import DeepfakeNet
from deepfakenet.runtime import ChampionWatcher, LoadedModel, ModelHolder

pytestmark = pytest.mark.slow


@pytest.fixture
def two_versions(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = registry.use(registry.RegistryConfig(uri, str(tmp_path / "artifacts")))
    # An explicit artifact location: MLflow's default (./mlruns) would write into the checkout.
    experiment = registry.experiment_id(client, "runtime-test", str(tmp_path / "artifacts"))
    for seed in (1, 2):
        torch.manual_seed(seed)
        with mlflow.start_run(experiment_id=experiment):
            registry.log_and_register(DeepfakeNet(crop_size=32), "deepfakenet")
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, 1)
    net, version = registry.load_net("deepfakenet", registry.CHAMPION)
    holder = ModelHolder(LoadedModel.wrap(net, registry.version_labels(version, "champion"), "v1"))
    return uri, client, holder


def test_check_swaps_when_the_alias_moves(two_versions):
    uri, client, holder = two_versions
    watcher = ChampionWatcher(holder, uri, "deepfakenet")
    first = holder.current
    assert watcher.check() is False and holder.current is first

    registry.set_alias(client, "deepfakenet", registry.CHAMPION, 2)
    assert watcher.check() is True
    assert holder.current.version == "2" and holder.current.labels["alias"] == "champion"
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(first.net(x), holder.current.net(x)), "new weights are served"
    # The explain copy is a separate module with the same weights.
    assert holder.current.explain_net is not holder.current.net
    torch.testing.assert_close(holder.current.explain_net(x), holder.current.net(x))
    # Versions registered without ONNX artifacts are served by torch, and /model says why.
    assert holder.current.backend_info["backend"] == "torch"
    assert "no ONNX artifacts" in holder.current.backend_info["note"]

    # Each swap downloads the version; the replaced download is deleted, one copy stays.
    second = watcher._downloaded
    assert second is not None and second.is_dir()
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, 1)
    assert watcher.check() is True and holder.current.version == "1"
    third = watcher._downloaded
    assert not second.exists() and third is not None and third.is_dir()
    watcher.stop()  # at shutdown the served model is in memory: its download goes too
    assert not third.exists()


def test_missing_alias_keeps_the_current_model(two_versions):
    uri, _, holder = two_versions
    watcher = ChampionWatcher(holder, uri, "deepfakenet", alias="no-such-alias")
    with pytest.raises(RegistryError):
        watcher.check()
    assert holder.current.version == "1"
    assert watcher.failing_since is None, "the registry answered: the alias is not there"
    assert watcher.poll() is False and "no-such-alias" in watcher.last_error


def test_polling_thread_follows_the_alias(two_versions):
    uri, client, holder = two_versions
    watcher = ChampionWatcher(holder, uri, "deepfakenet", interval_s=0.2)
    watcher.start()
    try:
        registry.set_alias(client, "deepfakenet", registry.CHAMPION, 2)
        deadline = time.monotonic() + 20
        while holder.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    assert holder.current.version == "2"


class _Outage:
    """Makes the watcher's registry client fail like a tracking server that is down."""

    def __init__(self, client) -> None:
        self.client, self.real, self.down = client, client.get_model_version_by_alias, True

    def __call__(self, name, alias):
        if self.down:
            raise MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE)
        return self.real(name, alias)


def test_an_outage_is_reported_as_such_and_the_model_keeps_serving(two_versions, monkeypatch):
    uri, _, holder = two_versions
    watcher = ChampionWatcher(holder, uri, "deepfakenet")
    monkeypatch.setattr(watcher.client, "get_model_version_by_alias", _Outage(watcher.client))
    with pytest.raises(MlflowException) as caught:
        watcher.check()
    assert not isinstance(caught.value, RegistryError), "an outage is not 'no such alias'"
    assert holder.current.version == "1"
    assert watcher.failing_since is not None, "GET /model reports the registry as failing"
    since = watcher.failing_since
    assert watcher.poll() is False and watcher.failing_since == since, "one streak, one start"
    assert "503" in watcher.last_error


def test_polling_survives_an_outage_and_follows_the_alias_after_it(two_versions, monkeypatch):
    uri, client, holder = two_versions
    watcher = ChampionWatcher(holder, uri, "deepfakenet", interval_s=0.1)
    outage = _Outage(watcher.client)
    monkeypatch.setattr(watcher.client, "get_model_version_by_alias", outage)
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while watcher.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.last_error is not None and "503" in watcher.last_error
        assert watcher.failing_since is not None
        time.sleep(0.3)  # several failed polls: the thread is still alive and serving v1
        assert watcher._thread.is_alive() and holder.current.version == "1"
        registry.set_alias(client, "deepfakenet", registry.CHAMPION, 2)
        outage.down = False
        deadline = time.monotonic() + 20
        while holder.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    assert holder.current.version == "2" and watcher.last_error is None
    assert watcher.failing_since is None
