"""The day-partitioned Parquet feature store and its buffered writer."""

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from deepfakenet.features import (
    FEATURE_DIM,
    FeatureRow,
    FeatureWriter,
    feature_matrix,
    read_features,
    write_features,
)

DAY1 = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
DAY2 = DAY1 + timedelta(minutes=2)


def rows(n: int, when: datetime, version: str = "1", seed: int = 0) -> list[FeatureRow]:
    rng = np.random.default_rng(seed)
    return [
        FeatureRow(f"id-{seed}-{i}", version, when, rng.random(FEATURE_DIM).astype(np.float32))
        for i in range(n)
    ]


def test_round_trip_partitioned_by_day(tmp_path):
    first, second = rows(3, DAY1), rows(2, DAY2, version="2", seed=1)
    written = write_features(tmp_path, first + second)
    assert sorted(p.parent.name for p in written) == ["date=2026-11-25", "date=2026-11-26"]
    frame = read_features(tmp_path)
    assert list(frame["prediction_id"]) == [r.prediction_id for r in first + second]
    np.testing.assert_array_equal(
        feature_matrix(frame), np.stack([r.features for r in first + second])
    )
    # Plain pyarrow/pandas read it too: it is an ordinary Hive-partitioned data set.
    assert ds.dataset(tmp_path, partitioning="hive").count_rows() == 5
    assert len(pd.read_parquet(tmp_path)) == 5


def test_filters_by_day_and_version(tmp_path):
    write_features(tmp_path, rows(3, DAY1) + rows(2, DAY2, version="2", seed=1))
    assert len(read_features(tmp_path, since=DAY2.date())) == 2
    assert len(read_features(tmp_path, until=DAY1.date())) == 3
    assert set(read_features(tmp_path, model_versions=["2"])["model_version"]) == {"2"}


def test_empty_store_and_bad_vectors(tmp_path):
    empty = read_features(tmp_path / "nothing")
    assert empty.empty and list(empty.columns) == [
        "prediction_id",
        "model_version",
        "created_at",
        "features",
    ]
    assert feature_matrix(empty).shape == (0, FEATURE_DIM)
    with pytest.raises(ValueError, match="512"):
        write_features(tmp_path, [FeatureRow("x", "1", DAY1, np.zeros(10))])


def test_writer_flushes_by_rows_and_by_age(tmp_path):
    writer = FeatureWriter(tmp_path, flush_rows=4, flush_seconds=0.3)
    try:
        writer.add(rows(4, DAY1))  # full: written at once, by the caller
        assert len(read_features(tmp_path)) == 4
        writer.add(rows(1, DAY1, seed=1))
        deadline = time.monotonic() + 5
        while len(read_features(tmp_path)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(read_features(tmp_path)) == 5, "the age-based flush did not run"
    finally:
        writer.close()


def test_writer_writes_the_rest_on_close_and_refuses_bad_rows(tmp_path):
    writer = FeatureWriter(tmp_path, flush_rows=100, flush_seconds=60)
    writer.add(rows(2, DAY1))
    assert len(read_features(tmp_path)) == 0, "nothing is due yet"
    with pytest.raises(ValueError, match="512"):
        writer.add([FeatureRow("bad", "1", DAY1, np.zeros(3))])
    writer.close()
    assert len(read_features(tmp_path)) == 2
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")], "no temp file left"
