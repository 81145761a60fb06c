"""What a scored image leaves behind, written in batches off the request path.

Every prediction leaves three things: its SQL record (what feedback refers to), its feature row
(Parquet, :mod:`deepfakenet.features`) and the decoded image (PNG, :class:`ImageArchive`). Writing
them one request at a time costs a transaction commit and an fsync per request on the cores the
model needs. :class:`Recorder` batches them instead, with one rule for each:

* **Records: group commit.** A request hands its record over and waits for the commit of the
  batch it joined; all records queued meanwhile go into one transaction. A client is answered
  only after its record is committed, so the prediction id it gets can be used for feedback at
  once, and a crash never loses a prediction a client was told about. If the commit fails, every
  request of that batch gets the error (nothing half-stored is reported as stored).
* **Feature rows** are handed to the :class:`FeatureWriter` once their record is committed (so no
  row ever names a prediction that does not exist); its flush interval is their crash window.
* **Images** are queued and written by a background thread, the request does not wait. The crash
  window is the queue: at most ``max_pending_pixels`` pixels of images not yet on disk (by
  default one maximal upload, or a few dozen typical ones; a full queue makes new requests
  wait, it never drops one).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfakenet.features import FeatureRow, FeatureWriter
from deepfakenet.store import ImageArchive, PredictionRecord, Store

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class _Pending:
    record: PredictionRecord
    features: np.ndarray
    done: Future[str]


class Recorder:
    """Group-commits prediction records, then queues their feature rows; archives images.

    One lock (the ``_room`` condition) orders every hand-over against :meth:`close`: nothing is
    queued after the stop marker, so everything accepted is written before ``close`` returns,
    and a caller arriving later is told (a record) or served synchronously (an image).

    Args:
        store: The prediction store (SQL).
        features: The feature-row writer (flushes on its own schedule).
        archive: The image archive.
        max_batch: Most records in one transaction.
        max_pending_pixels: Pixels of images waiting to be archived before :meth:`archive`
            blocks (back-pressure instead of unbounded memory under a burst of large uploads);
            an image larger than this is let in alone.
        close_timeout_s: Longest wait of :meth:`close` for each writer thread (a hung database
            must not hold a shutdown for ever; what is left is logged).
    """

    def __init__(
        self,
        store: Store,
        features: FeatureWriter,
        archive: ImageArchive,
        max_batch: int = 256,
        max_pending_pixels: int = 40_000_000,
        close_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.features = features
        self.image_archive = archive
        self.max_batch = max_batch
        self.max_pending_pixels = max_pending_pixels
        self.close_timeout_s = close_timeout_s
        self._records: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._images: queue.SimpleQueue[tuple[str, Image.Image] | object] = queue.SimpleQueue()
        self._pending_pixels = 0
        self._room = threading.Condition()
        self._closed = False
        # Daemons: a process that fails to start (or a test that fails) is never kept alive by
        # them; close() is what drains them.
        self._committer = threading.Thread(
            target=self._commit_loop, name="record-commit", daemon=True
        )
        self._archiver = threading.Thread(
            target=self._archive_loop, name="image-archive", daemon=True
        )
        self._committer.start()
        self._archiver.start()

    # ------------------------------------------------------------------ requests

    def record(self, record: PredictionRecord, features: np.ndarray) -> Future[str]:
        """Queue a record; the future resolves to its id once committed (or to the error).

        The future is marked running at once: a caller that gives up waiting (a cancelled
        request) cannot cancel it, so the commit still completes and the thread never meets a
        cancelled future.
        """
        done: Future[str] = Future()
        done.set_running_or_notify_cancel()
        with self._room:
            if not self._closed:
                self._records.put(_Pending(record, features, done))
                return done
        done.set_exception(RuntimeError("the recorder is closed: the server is shutting down"))
        return done

    def archive(self, sha256: str, image: Image.Image) -> None:
        """Queue an image for the archive; waits only while the queue is over its pixel budget.

        After :meth:`close` the image is written here and now: it is never dropped.
        """
        pixels = image.width * image.height
        with self._room:
            while (
                self._pending_pixels
                and self._pending_pixels + pixels > self.max_pending_pixels
                and not self._closed
            ):
                self._room.wait()
            if not self._closed:
                self._pending_pixels += pixels
                self._images.put((sha256, image))
                return
        self._put_image(sha256, image)

    def close(self) -> None:
        """Commit and archive everything queued, then stop the threads (at shutdown)."""
        with self._room:
            if self._closed:
                return
            self._closed = True
            self._records.put(_STOP)
            self._images.put(_STOP)
            self._room.notify_all()  # waiting archivers write their image themselves
        for thread in (self._committer, self._archiver):
            thread.join(self.close_timeout_s)
            if thread.is_alive():
                log.error(
                    "%s did not finish within %s s at shutdown", thread.name, self.close_timeout_s
                )

    # ------------------------------------------------------------------ threads

    def _commit_loop(self) -> None:
        stop = False
        while not stop:
            batch: list[_Pending] = []
            item = self._records.get()
            while True:
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if stop or len(batch) >= self.max_batch:
                    break
                try:
                    item = self._records.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._commit(batch)
                except Exception:  # never let one batch end the thread every request relies on
                    log.exception("recording %d predictions failed unexpectedly", len(batch))

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self.store.add_predictions(p.record for p in batch)
        except Exception as err:  # each waiting request reports it; the thread lives on
            log.exception("committing %d prediction records failed", len(batch))
            for pending in batch:
                pending.done.set_exception(err)
            return
        try:
            self.features.add(
                [
                    FeatureRow(p.record.id, p.record.model_version, p.record.created_at, p.features)
                    for p in batch
                ]
            )
        except Exception:  # the records are stored: the clients get their ids regardless
            log.exception("queueing %d feature rows failed", len(batch))
        for pending in batch:
            pending.done.set_result(pending.record.id)

    def _archive_loop(self) -> None:
        while (item := self._images.get()) is not _STOP:
            sha, image = item  # type: ignore[misc]
            try:
                self._put_image(sha, image)
            finally:
                with self._room:
                    self._pending_pixels -= image.width * image.height
                    self._room.notify_all()

    def _put_image(self, sha256: str, image: Image.Image) -> None:
        try:
            self.image_archive.put(sha256, image)
        except Exception:  # a full disk must not stop scoring; the loop lacks this image
            log.exception("archiving image %s failed", sha256[:12])
