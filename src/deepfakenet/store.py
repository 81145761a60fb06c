"""The durable records of the service: predictions, feedback, and the archive of scored images.

Predictions and feedback live in a SQL database through SQLAlchemy: a SQLite file by default (no
server needed), any SQLAlchemy URL in production (PostgreSQL is tested). Every write is its own
short transaction, so concurrent request handlers never lose or interleave records; SQLite runs in
WAL mode with a busy timeout so readers (the admin dashboard) never block writers.

What is stored is anonymised by construction: no client address, no file name, no EXIF. The
image itself is kept (as lossless PNG of the decoded pixels, so EXIF is gone) in a
content-addressed folder, only so the feedback loop can train on corrected images; images that
received no feedback are purged after a retention period.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from deepfakenet.errors import InvalidFeedbackError, NotFoundError
from deepfakenet.files import atomic_write
from deepfakenet.labels import LABELS
from deepfakenet.security import redact

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every record stores)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random 32-hex-digit id: unguessable, so ids can be handed to clients."""
    return uuid.uuid4().hex


#: Longest client key the store keeps (a hex SHA-256 HMAC is 64 characters).
CLIENT_KEY_CHARS = 64
#: One feedback row per prediction: a later vote replaces the earlier one.
FEEDBACK_UNIQUE_INDEX = "uq_feedback_prediction_id"


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class Prediction(Base):
    """One scored image: the model's answer and the image's non-identifying facts."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    endpoint: Mapped[str] = mapped_column(sa.String(16))
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[str] = mapped_column(sa.String(32), index=True)
    prob_fake: Mapped[float] = mapped_column(sa.Float)
    label: Mapped[str] = mapped_column(sa.String(8))
    threshold: Mapped[float] = mapped_column(sa.Float)
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    width: Mapped[int] = mapped_column(sa.Integer)
    height: Mapped[int] = mapped_column(sa.Integer)
    format: Mapped[str] = mapped_column(sa.String(16))
    # A keyed hash of the client (filled by the service; never the address itself), so that one
    # client voting many times on re-uploads of the same image counts once. Nullable: records
    # of the previous release have none.
    client_key: Mapped[str | None] = mapped_column(sa.String(CLIENT_KEY_CHARS), nullable=True)
    # The upload's C2PA provenance as JSON (:meth:`deepfakenet.provenance.Provenance.to_dict`),
    # kept beside the verdict it may contradict; never in the feature store. Nullable: records
    # of earlier releases have none.
    provenance: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


#: ``predictions.endpoint`` of a clip's record: its score is a clip rule's, not an image's.
VIDEO_ENDPOINT = "predict_video"

#: Columns added to ``predictions`` after the first release (nullable, with their DDL type):
#: :meth:`Store._upgrade` adds the missing ones to an older database.
ADDED_COLUMNS: dict[str, str] = {
    "client_key": f"VARCHAR({CLIENT_KEY_CHARS})",
    "provenance": "TEXT",
}


class Feedback(Base):
    """A person's verdict on a prediction; ``used_*`` is set once retraining consumed it.

    One verdict per prediction: a unique index on ``prediction_id`` (see
    :meth:`Store.add_feedback`, which replaces an earlier verdict).
    """

    __tablename__ = "feedback"
    __table_args__ = (sa.Index(FEEDBACK_UNIQUE_INDEX, "prediction_id", unique=True),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("predictions.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    label: Mapped[str] = mapped_column(sa.String(8))
    comment: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    used_by: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)


@dataclass(frozen=True)
class PredictionRecord:
    """A prediction as the service hands it to the store (and reads it back)."""

    id: str
    created_at: datetime
    endpoint: str
    model_name: str
    model_version: str
    prob_fake: float
    label: str
    threshold: float
    sha256: str
    width: int
    height: int
    format: str
    client_key: str | None = None
    provenance: str | None = None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never block the writer), enforced foreign keys, and a busy timeout."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, None for other URLs and in-memory SQLite."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: e.g. a non-numeric port
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite files the parent folder is created and tuned."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        if (path := sqlite_file(url)) is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(sa_url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(sa_url, pool_pre_ping=True)


class Store:
    """Prediction and feedback records behind one SQLAlchemy engine.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///var/store.db`` or
            ``postgresql+psycopg://user@host/db``.
        create: Create missing tables (idempotent).

    There are no migrations: tables are made by ``create_all``, which never changes an existing
    table. A database written by the previous release is brought up to date here instead, by
    two idempotent steps that are safe when several processes open the store at once:

    * the columns added since the first release (:data:`ADDED_COLUMNS`: ``client_key``,
      ``provenance``) are added when missing (``ALTER TABLE ... ADD COLUMN``, nullable: old rows
      have none); with ``create=False`` (a reader) the schema is left alone and a missing
      column reads as NULL;
    * the unique index on ``feedback.prediction_id`` is created when missing (with
      ``create=True``). Where old data already holds several votes on one prediction the
      index cannot be built; the store then keeps working without it and
      :meth:`feedback_frame` collapses those votes to the latest one.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            Base.metadata.create_all(self.engine)
        self._upgrade(create)
        log.info("store at %s", self.safe_url)

    def _upgrade(self, create: bool) -> None:
        """Bring a database of an earlier release up to this schema (see the class doc)."""
        self._missing: set[str] = set()
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(Prediction.__tablename__):
            return
        columns = {c["name"] for c in inspector.get_columns(Prediction.__tablename__)}
        for name, ddl_type in ADDED_COLUMNS.items():
            if name in columns:
                continue
            if not create:
                # A reader (the admin page opens the store with create=False, perhaps as a role
                # that may not ALTER) never changes the schema: the missing column reads as NULL.
                log.info("store: predictions.%s is missing (older database); read as empty", name)
                self._missing.add(name)
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE predictions ADD COLUMN {name} {ddl_type}"))
                log.info("store: added the column predictions.%s (older database)", name)
            except sa.exc.SQLAlchemyError as err:  # another process added it a moment ago
                fresh = {c["name"] for c in sa.inspect(self.engine).get_columns("predictions")}
                if name not in fresh:
                    raise
                log.debug("predictions.%s was added concurrently: %s", name, err)
        if not create or not inspector.has_table(Feedback.__tablename__):
            return
        indexes = {i["name"] for i in inspector.get_indexes(Feedback.__tablename__)}
        if FEEDBACK_UNIQUE_INDEX in indexes:
            return
        ddl = (
            f"CREATE UNIQUE INDEX IF NOT EXISTS {FEEDBACK_UNIQUE_INDEX} ON feedback (prediction_id)"
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text(ddl))
            log.info("store: feedback now holds one vote per prediction (unique index added)")
        except sa.exc.IntegrityError:
            log.warning(
                "store: older feedback holds several votes on one prediction; they are read as "
                "the latest vote each (no unique index until they are collapsed)"
            )
        except sa.exc.SQLAlchemyError as err:  # e.g. created concurrently by another process
            log.warning("store: could not add the unique feedback index: %s", err)

    @property
    def safe_url(self) -> str:
        """The URL without its password (in the user part or a ``?password=`` query), for logs."""
        return redact(self.url)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # ---------------------------------------------------------------- predictions

    def add_predictions(self, records: Iterable[PredictionRecord]) -> None:
        """Insert predictions in one transaction (all or none)."""
        with self._session.begin() as session:
            session.add_all(Prediction(**vars(r)) for r in records)

    def get_prediction(self, prediction_id: str) -> PredictionRecord:
        """The prediction with this id; raises :class:`NotFoundError` when there is none."""
        with self._session() as session:
            row = session.get(Prediction, prediction_id)
            if row is None:
                raise NotFoundError(f"no prediction with id {prediction_id!r}")
            return _record(row)

    # ---------------------------------------------------------------- feedback

    def add_feedback(
        self,
        prediction_id: str,
        label: str,
        comment: str | None = None,
        max_comment_chars: int = 2000,
    ) -> str:
        """Store a person's verdict on a prediction; return the feedback id.

        One vote per prediction: a second call for the same prediction replaces the first
        (label, comment, time) and returns the same id, and clears ``used_at``/``used_by``, so
        that a changed vote is seen by the next retraining run. Safe for concurrent writers:
        the unique index on ``prediction_id`` turns a lost insert race into an update.

        Raises:
            InvalidFeedbackError: The label is not ``real``/``fake`` or the comment is too long.
            NotFoundError: No prediction has this id.
        """
        if label not in LABELS:
            raise InvalidFeedbackError(f"label must be one of {list(LABELS)}, got {label!r}")
        comment = (comment or "").strip() or None
        if comment is not None and "\x00" in comment:  # PostgreSQL refuses NUL in text
            raise InvalidFeedbackError("comment must not contain NUL characters")
        if comment is not None and len(comment) > max_comment_chars:
            raise InvalidFeedbackError(
                f"comment is {len(comment)} characters, over the limit of {max_comment_chars}"
            )
        try:
            return self._put_feedback(prediction_id, label, comment)
        except sa.exc.IntegrityError:
            # Another writer inserted this prediction's vote between our read and our insert:
            # it exists now, so this attempt updates it (a lost race is a replaced vote).
            return self._put_feedback(prediction_id, label, comment)

    def _put_feedback(self, prediction_id: str, label: str, comment: str | None) -> str:
        """Update the prediction's (latest) vote, or insert the first one; one transaction."""
        with self._session.begin() as session:
            if session.get(Prediction, prediction_id) is None:
                raise NotFoundError(f"no prediction with id {prediction_id!r}")
            existing = session.scalars(
                sa.select(Feedback)
                .where(Feedback.prediction_id == prediction_id)
                .order_by(Feedback.created_at.desc(), Feedback.id.desc())
                .limit(1)
            ).first()
            if existing is not None:
                if existing.label != label:  # a changed vote is new evidence for retraining
                    existing.label, existing.used_at, existing.used_by = label, None, None
                    existing.created_at = utcnow()
                existing.comment = comment  # the same vote again only updates its comment
                return existing.id
            feedback_id = new_id()
            session.add(
                Feedback(
                    id=feedback_id,
                    prediction_id=prediction_id,
                    created_at=utcnow(),
                    label=label,
                    comment=comment,
                )
            )
        return feedback_id

    def mark_feedback_used(
        self, feedback_ids: Sequence[str], used_by: str, collected_at: datetime | None = None
    ) -> int:
        """Record that retraining consumed these feedback rows; return how many were marked.

        Args:
            feedback_ids: The rows the run read.
            used_by: What consumed them (data version, run id).
            collected_at: When the run read them. A vote changed after that (its
                ``created_at`` is later) is *not* marked: the run trained on the old label, so
                the new one must stay fresh for the next run.
        """
        if not feedback_ids:
            return 0
        query = sa.update(Feedback).where(
            Feedback.id.in_(list(feedback_ids)), Feedback.used_at.is_(None)
        )
        if collected_at is not None:
            query = query.where(Feedback.created_at <= collected_at)
        with self._session.begin() as session:
            result = session.execute(query.values(used_at=utcnow(), used_by=used_by))
            return int(result.rowcount or 0)

    # ---------------------------------------------------------------- reading (dashboards, jobs)

    def predictions_frame(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        model_versions: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Predictions as a frame (newest last), optionally filtered by time and model version."""
        columns = [c.name for c in Prediction.__table__.columns]
        selected = [self._column(name) for name in columns]
        query = sa.select(*selected).order_by(Prediction.created_at)
        query = _filtered(query, Prediction, since, until, model_versions)
        return self._frame(query, columns)

    def feedback_frame(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        model_versions: Sequence[str] | None = None,
        unused_only: bool = False,
    ) -> pd.DataFrame:
        """Feedback joined with its prediction: one row per prediction's vote, newest last.

        Columns: ``feedback_id``, ``prediction_id``, ``created_at`` (of the feedback),
        ``human_label``, ``comment``, ``used_at``, ``used_by`` and the prediction's
        ``predicted_at``, ``endpoint``, ``model_version``, ``prob_fake``, ``model_label``,
        ``threshold``, ``sha256``, ``width``, ``height``, ``format``, ``client_key``,
        ``provenance`` (JSON text).

        A database of the previous release may hold several votes on one prediction (there was
        no unique index): only the latest of them is returned, as if it had replaced the others.
        """
        query = (
            sa.select(
                Feedback.id.label("feedback_id"),
                Feedback.prediction_id,
                Feedback.created_at,
                Feedback.label.label("human_label"),
                Feedback.comment,
                Feedback.used_at,
                Feedback.used_by,
                Prediction.created_at.label("predicted_at"),
                Prediction.endpoint,
                Prediction.model_version,
                Prediction.prob_fake,
                Prediction.label.label("model_label"),
                Prediction.threshold,
                Prediction.sha256,
                Prediction.width,
                Prediction.height,
                Prediction.format,
                self._column("client_key"),
                self._column("provenance"),
            )
            .join(Prediction, Feedback.prediction_id == Prediction.id)
            .order_by(Feedback.created_at)
        )
        query = _filtered(query, Feedback, since, until, None)
        if model_versions:
            query = query.where(Prediction.model_version.in_(list(model_versions)))
        columns = [
            "feedback_id",
            "prediction_id",
            "created_at",
            "human_label",
            "comment",
            "used_at",
            "used_by",
            "predicted_at",
            "endpoint",
            "model_version",
            "prob_fake",
            "model_label",
            "threshold",
            "sha256",
            "width",
            "height",
            "format",
            "client_key",
            "provenance",
        ]
        frame = self._frame(query, columns)
        if frame["prediction_id"].duplicated().any():  # older database: the latest vote wins
            frame = frame.drop_duplicates("prediction_id", keep="last")
        if unused_only:  # after the de-duplication: a superseded unused vote must not come back
            frame = frame[frame["used_at"].isna()]
        return frame.reset_index(drop=True)

    def _column(self, name: str) -> Any:
        """A ``predictions`` column, or NULL under its name where an older database lacks it."""
        if name in self._missing:
            return sa.null().label(name)
        return getattr(Prediction, name)

    def shas_with_feedback(self) -> set[str]:
        """Content hashes of every image that received feedback (kept by the image purge)."""
        query = (
            sa.select(Prediction.sha256)
            .join(Feedback, Feedback.prediction_id == Prediction.id)
            .distinct()
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def _frame(self, query: sa.Select[Any], columns: list[str]) -> pd.DataFrame:
        # A Core connection returns plain column tuples, also for ORM-enabled selects.
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(query)]
        frame = pd.DataFrame(rows, columns=columns)
        for column in frame.columns:
            if column.endswith("_at"):
                frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame


def collect_labels(
    store: Store, min_votes: int = 1, tie: str = "skip", fresh_only: bool = True
) -> tuple[pd.DataFrame, int]:
    """One label per image that received feedback not used yet (all labelled: ``fresh_only``).

    The one labelling rule of the project: retraining (:mod:`deepfakenet.retrain`) and the
    federated sites (:mod:`deepfakenet.federated.sites`) read labels through it.

    Votes on clips (``/predict_video``) are left out: a clip's label does not say which of its
    frames are fake, so no image can be labelled from it.

    A vote counts once per *client*, so one client re-uploading the same bytes and voting each
    time cannot decide the image's label: per image (content hash), each client's latest vote is
    kept (the client is the prediction's ``client_key``; a prediction without one, e.g. of the
    previous release, is a client of its own), then the majority of those votes is the label.
    The store already keeps one vote per prediction.

    The label is the majority of *all* the image's votes (used ones included), so one late
    vote cannot overturn an image many people agreed on; an image counts as new when at least
    one of its votes is unused.

    Args:
        store: The prediction + feedback store.
        min_votes: Least number of clients an image needs.
        tie: ``skip`` drops images whose votes are tied; ``latest`` takes the newest vote.
        fresh_only: Only images with a vote not used yet (retraining); False: every image
            with a vote (a federated site trains on all of its labels each time).

    Returns:
        ``(labels, ties)``: a frame with ``sha256``, ``label``, ``votes`` (distinct clients),
        ``feedback_ids`` (every unused one of the image, superseded votes included, to mark once
        consumed), sorted by hash; and how many images were skipped as ties.
    """
    if tie not in {"skip", "latest"}:
        raise ValueError(f"tie must be 'skip' or 'latest', got {tie!r}")
    feedback = store.feedback_frame()
    feedback = feedback[feedback["endpoint"] != VIDEO_ENDPOINT]
    keys = feedback["client_key"]
    client = keys.where(keys.notna(), "prediction:" + feedback["prediction_id"].astype(str))
    feedback = feedback.assign(client=client).sort_values("created_at", kind="stable")
    fresh = set(feedback.loc[feedback["used_at"].isna() | (not fresh_only), "sha256"])
    rows, ties = [], 0
    for sha, group in feedback[feedback["sha256"].isin(fresh)].groupby("sha256", sort=True):
        votes = group.groupby("client", sort=False).tail(1)  # each client's latest vote
        if len(votes) < min_votes:
            continue
        counts = votes["human_label"].value_counts()
        top = counts[counts == counts.max()]
        if len(top) > 1:
            if tie == "skip":
                ties += 1
                continue
            label = votes["human_label"].iloc[-1]
        else:
            label = top.index[0]
        unused = group.loc[group["used_at"].isna(), "feedback_id"].tolist()
        rows.append({"sha256": sha, "label": label, "votes": len(votes), "feedback_ids": unused})
    return pd.DataFrame(rows, columns=["sha256", "label", "votes", "feedback_ids"]), ties


def _filtered(
    query: sa.Select[Any],
    table: type[Prediction] | type[Feedback],
    since: datetime | None,
    until: datetime | None,
    model_versions: Sequence[str] | None,
) -> sa.Select[Any]:
    # SQLite keeps naive UTC strings: compare in UTC (a naive bound is taken as UTC already).
    if since is not None:
        query = query.where(table.created_at >= _as_utc(since))
    if until is not None:
        query = query.where(table.created_at < _as_utc(until))
    if model_versions and table is Prediction:
        query = query.where(Prediction.model_version.in_(list(model_versions)))
    return query


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _as_dict(row: Base) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in row.__table__.columns}


def _record(row: Prediction) -> PredictionRecord:
    values = _as_dict(row)
    values["created_at"] = _as_utc(values["created_at"])  # SQLite drops the zone; all are UTC
    return PredictionRecord(**values)


class ImageArchive:
    """Scored images by content hash (``<root>/<sha[:2]>/<sha>.png``), for the feedback loop.

    The decoded pixels are stored as lossless PNG: EXIF and any other metadata of the upload is
    gone, while every pixel (compression traces included) is what the model scored. Writes are
    atomic (temporary file + rename), so a concurrent reader never sees half a file, and two
    uploads of the same image write the same name.

    Args:
        root: Folder of the archive (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the image with this content hash lives (whether or not it exists)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.png"

    def put(self, sha256: str, image: Image.Image) -> Path:
        """Store ``image`` under its upload's hash unless it is already there."""
        target = self.path(sha256)
        if target.exists():
            try:
                os.utime(target)  # restart its retention clock
                return target
            except FileNotFoundError:  # purged a moment ago: write it again
                pass
        # PNG keeps every pixel; nothing of the upload's metadata (decode_image drops it). The
        # fastest zlib level: this runs for every scored image, on the cores inference needs.
        return atomic_write(
            target, lambda handle: image.save(handle, format="PNG", compress_level=1)
        )

    def exists(self, sha256: str) -> bool:
        """Whether the image with this hash is archived."""
        return self.path(sha256).is_file()

    def purge(self, older_than: timedelta, keep: set[str]) -> int:
        """Delete images not touched for ``older_than`` whose hash is not in ``keep``.

        Returns:
            The number of files deleted.
        """
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for path in self.root.glob("*/*.png"):
            if path.stem in keep:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # purged concurrently
                continue
        if removed:
            log.info(
                "purged %d archived images older than %s without feedback", removed, older_than
            )
        return removed
