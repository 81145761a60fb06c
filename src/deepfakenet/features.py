"""The federated feature store: 512-d penultimate-layer vectors in day-partitioned Parquet.

Each scored image leaves one row: ``prediction_id``, ``model_version``, ``created_at`` and the
``features`` vector (float32). No pixels, no EXIF, no client identity: the vectors are what a
collaborating site can share to train or audit a head without ever seeing an image. The layout
is a Hive-partitioned Parquet data set (``<root>/date=YYYY-MM-DD/part-*.parquet``) that pandas,
pyarrow, duckdb and Spark read directly; :func:`read_features` is the small reader of the library.

Writing one file per request would leave millions of tiny files, so the service buffers rows in a
:class:`FeatureWriter` and writes one file per flush (every N rows or T seconds, and at
shutdown). Files are written under a temporary name and renamed, so readers never see a partial
file. The durability window is the flush interval: a hard crash loses at most those rows, while
the prediction records themselves are committed to the SQL store before a client gets its id
(:mod:`deepfakenet.recording`, which hands the rows over once their records are committed).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from deepfakenet.files import atomic_write

log = logging.getLogger(__name__)

FEATURE_DIM = 512

SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("model_version", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("features", pa.list_(pa.float32(), FEATURE_DIM)),
    ]
)


@dataclass(frozen=True)
class FeatureRow:
    """One image's anonymised feature vector and the ids that link it to its prediction."""

    prediction_id: str
    model_version: str
    created_at: datetime
    features: np.ndarray


def _check_dim(row: FeatureRow) -> None:
    if np.shape(row.features) != (FEATURE_DIM,):
        raise ValueError(
            f"feature vectors must have {FEATURE_DIM} values, got {np.shape(row.features)}"
        )


def write_features(root: str | Path, rows: Sequence[FeatureRow]) -> list[Path]:
    """Write rows as one new Parquet file per day partition; return the files written.

    Raises:
        ValueError: A vector is not ``FEATURE_DIM`` long.
    """
    root = Path(root)
    by_day: dict[date, list[FeatureRow]] = {}
    for row in rows:
        _check_dim(row)
        by_day.setdefault(row.created_at.date(), []).append(row)
    written = []
    for day, day_rows in sorted(by_day.items()):
        vectors = np.stack([np.asarray(r.features, dtype=np.float32) for r in day_rows])
        table = pa.table(
            {
                "prediction_id": [r.prediction_id for r in day_rows],
                "model_version": [r.model_version for r in day_rows],
                "created_at": [r.created_at for r in day_rows],
                "features": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.ravel(), pa.float32()), FEATURE_DIM
                ),
            },
            schema=SCHEMA,
        )
        target = root / f"date={day.isoformat()}" / f"part-{uuid.uuid4().hex}.parquet"
        written.append(atomic_write(target, lambda handle, t=table: pq.write_table(t, handle)))
    return written


def read_features(
    root: str | Path,
    since: date | None = None,
    until: date | None = None,
    model_versions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read stored vectors into a frame (``features`` holds one float32 array per row).

    Args:
        root: The feature store root.
        since: First day to read (inclusive), by partition.
        until: Last day to read (inclusive), by partition.
        model_versions: Only rows scored by these model versions.

    Returns:
        Columns ``prediction_id``, ``model_version``, ``created_at``, ``features``, sorted by
        time; empty (with those columns) when nothing is stored yet.
    """
    root = Path(root)
    columns = [f.name for f in SCHEMA]
    if not root.is_dir() or not any(root.glob("date=*/*.parquet")):
        return pd.DataFrame(columns=columns)
    dataset = ds.dataset(root, format="parquet", partitioning="hive", schema=_with_date(SCHEMA))
    condition = None
    for expr in (
        ds.field("date") >= pa.scalar(since) if since else None,
        ds.field("date") <= pa.scalar(until) if until else None,
        ds.field("model_version").isin(list(model_versions)) if model_versions else None,
    ):
        if expr is not None:
            condition = expr if condition is None else condition & expr
    table = dataset.to_table(columns=columns, filter=condition)
    frame = table.to_pandas()
    return frame.sort_values("created_at", kind="stable").reset_index(drop=True)


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The ``features`` column of :func:`read_features` as an ``N x 512`` float32 matrix."""
    if frame.empty:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return np.stack(frame["features"].to_numpy()).astype(np.float32, copy=False)


def _with_date(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("date", pa.date32()))


class FeatureWriter:
    """Buffers feature rows and writes them in batches (by row count or age, and on close).

    Thread-safe: :meth:`add` may be called from several threads (the service's record writer,
    jobs); a daemon thread flushes rows older than ``flush_seconds``.

    Args:
        root: The feature store root.
        flush_rows: Buffered rows that trigger an immediate write.
        flush_seconds: Longest time a row waits in the buffer.
    """

    #: Rows kept while writes keep failing (a full disk); older rows are dropped past this.
    MAX_BUFFERED_ROWS = 100_000

    def __init__(self, root: str | Path, flush_rows: int = 256, flush_seconds: float = 5.0) -> None:
        self.root = Path(root)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._rows: list[FeatureRow] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feature-writer", daemon=True)
        self._thread.start()

    def add(self, rows: Sequence[FeatureRow]) -> None:
        """Queue rows; writes at once when the buffer is full.

        Raises:
            ValueError: A vector is not ``FEATURE_DIM`` long (checked here, so one bad row can
                never block the rows queued with it).
        """
        for row in rows:
            _check_dim(row)
        with self._lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> int:
        """Write whatever is buffered; return the number of rows written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                write_features(self.root, rows)
            except Exception:
                with self._lock:  # keep them for the next try rather than lose them
                    self._rows[:0] = rows
                    excess = len(self._rows) - self.MAX_BUFFERED_ROWS
                    if excess > 0:
                        del self._rows[:excess]
                        log.error("feature buffer full: dropped the %d oldest rows", excess)
                log.exception(
                    "writing %d feature rows to %s failed; will retry", len(rows), self.root
                )
                return 0
            log.debug("wrote %d feature rows to %s", len(rows), self.root)
            return len(rows)

    def close(self) -> None:
        """Stop the flusher thread and write what is left."""
        self._stop.set()
        self._thread.join(timeout=self.flush_seconds + 5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
