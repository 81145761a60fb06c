"""The prediction + feedback store on SQLite and on the real PostgreSQL server, and the archive."""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from deepfakenet.errors import InvalidFeedbackError, NotFoundError
from deepfakenet.store import ImageArchive, Store, utcnow
from tests.conftest import prediction_record as record


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("pg_database")
    store = Store(url)
    yield store
    store.close()


def test_prediction_round_trip_and_unknown_id(store):
    rec = record()
    store.add_predictions([rec])
    assert store.get_prediction(rec.id) == rec
    with pytest.raises(NotFoundError, match="no prediction"):
        store.get_prediction("f" * 32)


def test_feedback_is_validated_and_joined_with_its_prediction(store):
    rec = record(prob_fake=0.9, label="fake")
    store.add_predictions([rec])
    feedback_id = store.add_feedback(rec.id, "real", "  a real photo  ")
    with pytest.raises(InvalidFeedbackError, match="label must be one of"):
        store.add_feedback(rec.id, "deepfake")
    with pytest.raises(InvalidFeedbackError, match="comment"):
        store.add_feedback(rec.id, "real", "x" * 11, max_comment_chars=10)
    with pytest.raises(NotFoundError):
        store.add_feedback("0" * 32, "real")
    frame = store.feedback_frame()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["feedback_id"] == feedback_id and row["comment"] == "a real photo"
    assert (row["human_label"], row["model_label"]) == ("real", "fake")
    assert row["prob_fake"] == pytest.approx(0.9) and row["sha256"] == rec.sha256
    assert store.shas_with_feedback() == {rec.sha256}


def test_frames_filter_by_time_and_version_and_unused(store):
    now = utcnow()
    old = record(created_at=now - timedelta(days=3), model_version="1")
    new = record(created_at=now, model_version="2")
    store.add_predictions([old, new])
    assert list(store.predictions_frame(since=now - timedelta(days=1))["id"]) == [new.id]
    assert list(store.predictions_frame(until=now - timedelta(days=1))["id"]) == [old.id]
    assert list(store.predictions_frame(model_versions=["1"])["id"]) == [old.id]
    # Bounds in another time zone mean the same instants (SQLite keeps naive UTC strings).
    plus5 = timezone(timedelta(hours=5))
    assert list(
        store.predictions_frame(since=(now - timedelta(hours=1)).astimezone(plus5))["id"]
    ) == [new.id]
    assert str(store.predictions_frame()["created_at"].dt.tz) == "UTC"

    first = store.add_feedback(old.id, "fake")
    second = store.add_feedback(new.id, "real")
    assert store.mark_feedback_used([first], used_by="retrain-1") == 1
    assert store.mark_feedback_used([first], used_by="retrain-2") == 0, "used only once"
    unused = store.feedback_frame(unused_only=True)
    assert list(unused["feedback_id"]) == [second]
    assert list(store.feedback_frame(model_versions=["1"])["feedback_id"]) == [first]


def test_concurrent_writers_lose_nothing(store):
    def write(i: int) -> str:
        rec = record(sha256=f"{i:064x}")
        store.add_predictions([rec])
        return store.add_feedback(rec.id, "real" if i % 2 else "fake", f"comment {i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(write, range(120)))
    assert len(set(ids)) == 120
    assert len(store.predictions_frame()) == 120
    frame = store.feedback_frame()
    assert set(frame["feedback_id"]) == set(ids)
    assert (
        frame["comment"].str.removeprefix("comment ").astype(int).sort_values() == np.arange(120)
    ).all()


def test_a_failed_batch_writes_nothing(store):
    rec = record()
    store.add_predictions([rec])
    with pytest.raises(sa.exc.IntegrityError):  # duplicate primary key inside the batch
        store.add_predictions([record(), record(id=rec.id)])
    assert len(store.predictions_frame()) == 1


def test_archive_is_content_addressed_atomic_and_purged(tmp_path):
    archive = ImageArchive(tmp_path / "images")
    image = Image.new("RGB", (8, 8), "red")
    keep, drop, fresh = "aa" * 32, "bb" * 32, "cc" * 32
    for sha in (keep, drop, fresh):
        archive.put(sha, image)
    assert archive.path(keep) == tmp_path / "images" / "aa" / f"{keep}.png"
    assert not list((tmp_path / "images").rglob("*.tmp"))
    old = time.time() - 10 * 86400
    for sha in (keep, drop):
        os.utime(archive.path(sha), (old, old))
    assert archive.purge(timedelta(days=7), keep={keep}) == 1
    assert archive.exists(keep) and archive.exists(fresh) and not archive.exists(drop)
    with pytest.raises(ValueError, match="sha256"):
        archive.path("../../etc/passwd")
