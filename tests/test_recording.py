"""The service's off-path writers (group commit of records, feature rows after the commit, a
bounded background image archive that loses nothing on a clean close) and its scale settings."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from deepfakenet.features import FeatureWriter, read_features
from deepfakenet.recording import Recorder
from deepfakenet.store import ImageArchive, Store
from tests.conftest import prediction_record

RNG = np.random.default_rng(0)


@pytest.fixture
def parts(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    writer = FeatureWriter(tmp_path / "features", flush_rows=10_000, flush_seconds=60)
    archive = ImageArchive(tmp_path / "images")
    yield store, writer, archive, tmp_path
    writer.close()
    store.close()


class CountingStore:
    """A store that counts transactions and can be told to fail or to be slow."""

    def __init__(self, store: Store, gate: threading.Event | None = None) -> None:
        self.store = store
        self.transactions: list[int] = []
        self.fail = False
        self.gate = gate

    def add_predictions(self, records) -> None:
        records = list(records)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.store.add_predictions(records)
        self.transactions.append(len(records))


def test_a_resolved_id_is_committed_and_concurrent_records_share_transactions(parts):
    store, writer, archive, tmp = parts
    gate = threading.Event()
    counting = CountingStore(store, gate)
    recorder = Recorder(counting, writer, archive)  # type: ignore[arg-type]
    records = [prediction_record() for _ in range(40)]
    futures = [recorder.record(r, RNG.random(512, dtype=np.float32)) for r in records]
    # A request that gives up (asyncio cancels the wrapped future) cannot cancel the commit.
    assert not futures[-1].cancel()
    gate.set()  # the first commit was held: everything queued meanwhile joins one batch
    ids = [f.result(timeout=10) for f in futures]
    assert ids == [r.id for r in records]
    for pid in ids:  # usable for feedback the moment the future resolves
        assert store.get_prediction(pid).id == pid
    assert sum(counting.transactions) == 40 and len(counting.transactions) < 40
    recorder.close()
    writer.flush()
    assert set(read_features(tmp / "features")["prediction_id"]) == set(ids)


def test_a_failed_commit_fails_every_request_of_its_batch_and_stores_no_feature_row(parts):
    store, writer, archive, tmp = parts
    counting = CountingStore(store)
    counting.fail = True
    recorder = Recorder(counting, writer, archive)  # type: ignore[arg-type]
    futures = [recorder.record(prediction_record(), np.zeros(512, np.float32)) for _ in range(3)]
    for future in futures:
        with pytest.raises(OSError, match="disk full"):
            future.result(timeout=10)
    counting.fail = False  # the thread survived the failure
    later = prediction_record()
    assert recorder.record(later, np.zeros(512, np.float32)).result(timeout=10) == later.id
    recorder.close()
    writer.flush()
    assert list(read_features(tmp / "features")["prediction_id"]) == [later.id]


def test_images_are_archived_in_the_background_and_close_drains_the_queue(parts):
    store, writer, archive, _ = parts
    recorder = Recorder(store, writer, archive)
    images = {
        f"{i:064x}": Image.fromarray(RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        for i in range(25)
    }
    for sha, image in images.items():
        recorder.archive(sha, image)
    recorder.close()
    for sha, image in images.items():
        with Image.open(archive.path(sha)) as kept:
            assert np.array_equal(np.asarray(kept), np.asarray(image))
    with pytest.raises(RuntimeError, match="closed"):
        recorder.record(prediction_record(), np.zeros(512, np.float32)).result()
    late = f"{99:064x}"  # an image arriving after close is written at once, not dropped
    recorder.archive(late, next(iter(images.values())))
    assert archive.exists(late)


def test_a_full_archive_queue_makes_requests_wait_instead_of_dropping_images(parts, monkeypatch):
    store, writer, archive, _ = parts
    release = threading.Event()
    real_put = archive.put

    def slow_put(sha, image):
        if sha != f"{3:064x}":  # the queued three are stuck until released
            release.wait(10)
        return real_put(sha, image)

    monkeypatch.setattr(archive, "put", slow_put)
    recorder = Recorder(store, writer, archive, max_pending_pixels=3 * 100)  # three 10x10 images
    image = Image.new("RGB", (10, 10))
    with ThreadPoolExecutor(2) as pool:
        for i in range(3):
            recorder.archive(f"{i:064x}", image)
        blocked = pool.submit(recorder.archive, f"{3:064x}", image)
        with pytest.raises(TimeoutError):
            blocked.result(timeout=0.3)  # over the budget: waits for the writer
        closing = pool.submit(recorder.close)  # a waiter at close writes its image itself
        blocked.result(timeout=10)
        assert archive.exists(f"{3:064x}")
        release.set()
        closing.result(timeout=10)
    assert all(archive.exists(f"{i:064x}") for i in range(4))


def test_backend_workers_and_threads_come_from_the_environment(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from deepfakenet.settings import ServiceSettings, usable_cores

    monkeypatch.setenv("DEEPFAKENET_HOME", str(tmp_path))
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000\n")  # a container limited to 2 CPUs
    assert usable_cores(quota) == 2
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == 8 and usable_cores(tmp_path / "none") == 8
    monkeypatch.setattr("deepfakenet.settings.usable_cores", lambda: 8)
    default = ServiceSettings()
    assert default.backend == "auto"
    assert default.worker_count == 1 and default.backend_threads == 8
    monkeypatch.setenv("DEEPFAKENET_BACKEND", "onnx-int8")
    monkeypatch.setenv("DEEPFAKENET_WORKERS", "4")
    settings = ServiceSettings()
    assert settings.backend == "onnx-int8" and settings.worker_count == 4
    assert settings.backend_threads == 2, "8 cores shared by 4 workers"
    monkeypatch.setenv("DEEPFAKENET_THREADS", "3")
    assert ServiceSettings().backend_threads == 3
    monkeypatch.setenv("DEEPFAKENET_BACKEND", "tensorrt")
    with pytest.raises(ValidationError, match="backend"):
        ServiceSettings()
