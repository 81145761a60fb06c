"""The prediction + feedback store on SQLite and on the real PostgreSQL server, and the archive."""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone

import numpy as np
import pandas as pd
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


# ------------------------------------------------------------------------- one vote per prediction


def test_a_second_vote_replaces_the_first(store):
    rec = record(client_key="k" * 64)
    store.add_predictions([rec])
    assert store.get_prediction(rec.id).client_key == "k" * 64
    first = store.add_feedback(rec.id, "fake", "first look")
    assert store.mark_feedback_used([first], "retrain-1") == 1
    again = store.add_feedback(rec.id, "real", "looked again")
    assert again == first, "the feedback id stays the same for the prediction"
    frame = store.feedback_frame()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["human_label"], row["comment"], row["client_key"]) == (
        "real",
        "looked again",
        "k" * 64,
    )
    assert pd.isna(row["used_at"]) and row["used_by"] is None, "a changed vote is new again"


def test_concurrent_votes_on_one_prediction_keep_one_row(store):
    rec = record()
    store.add_predictions([rec])
    labels = ["real" if i % 2 else "fake" for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda label: store.add_feedback(rec.id, label), labels))
    assert len(set(ids)) == 1, "every writer got the one vote's id"
    frame = store.feedback_frame()
    assert len(frame) == 1 and frame.iloc[0]["feedback_id"] == ids[0]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar() == 1


def test_the_unique_index_refuses_a_second_row(store):
    rec = record()
    store.add_predictions([rec])
    store.add_feedback(rec.id, "real")
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO feedback (id, prediction_id, created_at, label) "
                "VALUES (:id, :pid, :at, 'fake')"
            ),
            {"id": "f" * 32, "pid": rec.id, "at": utcnow()},
        )


#: The schema of the previous release (no client key, no unique vote per prediction).
OLD_SCHEMA = [
    """CREATE TABLE predictions (
        id VARCHAR(32) NOT NULL PRIMARY KEY, created_at {ts} NOT NULL,
        endpoint VARCHAR(16) NOT NULL, model_name VARCHAR(128) NOT NULL,
        model_version VARCHAR(32) NOT NULL, prob_fake FLOAT NOT NULL, label VARCHAR(8) NOT NULL,
        threshold FLOAT NOT NULL, sha256 VARCHAR(64) NOT NULL, width INTEGER NOT NULL,
        height INTEGER NOT NULL, format VARCHAR(16) NOT NULL)""",
    """CREATE TABLE feedback (
        id VARCHAR(32) NOT NULL PRIMARY KEY,
        prediction_id VARCHAR(32) NOT NULL REFERENCES predictions (id) ON DELETE CASCADE,
        created_at {ts} NOT NULL, label VARCHAR(8) NOT NULL, comment TEXT,
        used_at {ts}, used_by VARCHAR(128))""",
    "CREATE INDEX ix_feedback_prediction_id ON feedback (prediction_id)",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/old.db"
    return request.getfixturevalue("pg_database")


def _old_store(url: str, duplicates: bool) -> str:
    """Fill ``url`` the way the previous release did; returns the prediction id."""
    engine = sa.create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    now = utcnow().replace(tzinfo=None) if sqlite else utcnow()
    with engine.begin() as conn:
        for ddl in OLD_SCHEMA:
            conn.execute(sa.text(ddl.format(ts="DATETIME" if sqlite else "TIMESTAMPTZ")))
        conn.execute(
            sa.text(
                "INSERT INTO predictions VALUES "
                "('p1', :at, 'predict', 'deepfakenet', '1', 0.9, 'fake', 0.5, :sha, 8, 8, 'PNG')"
            ),
            {"at": now, "sha": "ab" * 32},
        )
        votes = [("f1", "real"), ("f2", "fake")] if duplicates else [("f1", "real")]
        for i, (fid, label) in enumerate(votes):
            conn.execute(
                sa.text(
                    "INSERT INTO feedback (id, prediction_id, created_at, label) "
                    "VALUES (:id, 'p1', :at, :label)"
                ),
                {"id": fid, "at": now + timedelta(seconds=i), "label": label},
            )
    engine.dispose()
    return "p1"


def test_a_database_of_the_previous_release_is_upgraded(empty_url):
    url, pid = empty_url, _old_store(empty_url, duplicates=False)
    store = Store(url)
    Store(url).close()  # a second process opening it: the upgrade is idempotent
    inspector = sa.inspect(store.engine)
    assert {"client_key", "provenance"} <= {c["name"] for c in inspector.get_columns("predictions")}
    assert "uq_feedback_prediction_id" in {i["name"] for i in inspector.get_indexes("feedback")}
    assert store.get_prediction(pid).client_key is None
    assert store.get_prediction(pid).provenance is None
    signed = record(client_key="c" * 64, provenance='{"manifest_present": true}')
    store.add_predictions([signed])
    assert store.get_prediction(signed.id).provenance == '{"manifest_present": true}'
    assert store.predictions_frame()["provenance"].tolist()[1] == '{"manifest_present": true}'
    assert store.add_feedback(pid, "fake") == "f1"
    assert store.feedback_frame()["human_label"].tolist() == ["fake"]
    store.close()
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO feedback (id, prediction_id, created_at, label) "
                             "VALUES ('f9', 'p1', CURRENT_TIMESTAMP, 'real')"))  # fmt: skip


def test_old_duplicate_votes_are_read_as_the_latest_one(empty_url):
    url, pid = empty_url, _old_store(empty_url, duplicates=True)
    store = Store(url)
    frame = store.feedback_frame()
    assert frame[["feedback_id", "human_label"]].values.tolist() == [["f2", "fake"]]
    assert store.add_feedback(pid, "real", "changed my mind") == "f2", "the latest is updated"
    frame = store.feedback_frame()
    assert frame[["feedback_id", "human_label"]].values.tolist() == [["f2", "real"]]
    # A reader (the dashboard) opening the old file sees the same, and it is not rewritten.
    reader = Store(url, create=False)
    assert reader.feedback_frame()["feedback_id"].tolist() == ["f2"]
    reader.close()
    store.close()


def test_a_vote_changed_after_collection_is_not_consumed(store):
    """A retraining run trains on the labels it read; a vote changed meanwhile stays fresh."""
    rec = record()
    store.add_predictions([rec])
    vote = store.add_feedback(rec.id, "fake")
    collected_at = utcnow()  # the run reads its labels here, then trains for minutes
    time.sleep(0.01)
    store.add_feedback(rec.id, "real", "looked again")
    assert store.mark_feedback_used([vote], "run", collected_at=collected_at) == 0
    fresh = store.feedback_frame(unused_only=True)
    assert fresh["human_label"].tolist() == ["real"], "the changed vote is left for the next run"


def test_the_same_vote_again_does_not_make_it_new(store):
    rec = record()
    store.add_predictions([rec])
    vote = store.add_feedback(rec.id, "fake")
    assert store.mark_feedback_used([vote], "run") == 1
    store.add_feedback(rec.id, "fake", "still fake")
    frame = store.feedback_frame()
    assert frame.iloc[0]["comment"] == "still fake"
    assert store.feedback_frame(unused_only=True).empty, "re-sending a vote cannot trigger runs"


def test_an_old_database_is_read_without_changing_it(tmp_path):
    """The admin page opens the store to read (create=False), perhaps as a database role that
    may not ALTER (PostgreSQL): no DDL then, and the missing column reads as empty."""
    path = tmp_path / "old.db"
    pid = _old_store(f"sqlite:///{path}", duplicates=True)
    reader = Store(f"sqlite:///{path}", create=False)
    frame = reader.feedback_frame(unused_only=True)
    assert frame[["prediction_id", "feedback_id"]].values.tolist() == [[pid, "f2"]]
    assert frame["client_key"].isna().all() and frame["provenance"].isna().all()
    assert reader.predictions_frame()[["client_key", "provenance"]].isna().all().all()
    reader.close()
    columns = {c["name"] for c in sa.inspect(sa.create_engine(f"sqlite:///{path}")).get_columns(
        "predictions")}  # fmt: skip
    assert not {"client_key", "provenance"} & columns, "a reader never changes the schema"


def test_votes_on_clips_are_stored_but_never_label_an_image(store):
    """A clip's label does not say which frames are fake: retraining never learns from it."""
    from deepfakenet.store import VIDEO_ENDPOINT, collect_labels

    image, clip = record(sha256="a" * 64), record(sha256="b" * 64, endpoint=VIDEO_ENDPOINT)
    store.add_predictions([image, clip])
    store.add_feedback(image.id, "fake")
    store.add_feedback(clip.id, "fake")
    assert store.feedback_frame()["endpoint"].tolist() == ["predict", VIDEO_ENDPOINT]
    labels, _ = collect_labels(store)
    assert labels["sha256"].tolist() == ["a" * 64]
