"""Scan an image tree and split it by a stable hash of each file's content.

The split of a file depends on its bytes alone, never on how many other files there are or the
order they are listed in. Adding images later (the feedback loop does) therefore never moves an
old test image into training, and models trained months apart stay comparable on the same test
items. Changing the fractions does move files: treat them as part of the data version.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from deepfakenet.errors import DatasetError, InvalidImageError
from deepfakenet.imaging import IMAGE_EXTENSIONS, DecodeLimits, decode_image

log = logging.getLogger(__name__)

#: Class folder names, in target order: ``real`` is 0, ``fake`` is 1 (``prob_fake`` = P(1)).
CLASSES: tuple[str, str] = ("real", "fake")
SPLITS: tuple[str, str, str] = ("train", "val", "test")


def assign_split(sha256: str, val_fraction: float, test_fraction: float) -> str:
    """Map a content hash to ``train``/``val``/``test``, the same way forever.

    Args:
        sha256: Hex digest of the file's bytes.
        val_fraction: Share of files that go to validation.
        test_fraction: Share of files that go to test.

    Returns:
        The split name.
    """
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"split fractions must be >= 0 and sum below 1, got val={val_fraction} "
            f"test={test_fraction}"
        )
    bucket = int(sha256[:15], 16) / float(16**15)
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def _inspect(path: Path, limits: DecodeLimits) -> tuple[str, int, int] | str:
    """Hash a file and check it decodes; return (sha256, width, height) or an error message."""
    try:
        data = path.read_bytes()
        decoded = decode_image(data, limits)
    except (OSError, InvalidImageError) as err:
        return str(err)
    return hashlib.sha256(data).hexdigest(), decoded.width, decoded.height


def scan_image_tree(
    root: str | Path,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    classes: Sequence[str] = CLASSES,
    limits: DecodeLimits | None = None,
    workers: int = 4,
) -> pd.DataFrame:
    """Index every decodable image below ``root/<class>/`` (any depth) with its split.

    Files that do not decode are skipped with a warning instead of failing a long run later in a
    data loader worker. Byte-identical files are kept once; the same bytes under both classes
    are a labelling conflict and are dropped with a warning.

    Args:
        root: The data tree; one folder per class name.
        val_fraction: Share of files (by hash) for validation.
        test_fraction: Share of files (by hash) for test.
        classes: Class folder names in target order.
        limits: Decode limits applied to every file.
        workers: Threads used for hashing and decode checks.

    Returns:
        A frame with ``path`` (absolute), ``relpath``, ``label``, ``target``, ``group`` (first
        folder below the class, e.g. a source or fake family; ``""`` for files directly in it),
        ``sha256``, ``width``, ``height`` and ``split``, sorted by ``sha256``: a stable order
        that mixes classes and groups, so an evaluation loader cut short (Lightning's
        ``limit_val_batches``) still sees both classes instead of the first folder only.
    """
    root = Path(root)
    limits = limits or DecodeLimits()
    candidates: list[tuple[Path, str, int]] = []
    for target, label in enumerate(classes):
        class_dir = root / label
        if not class_dir.is_dir():
            raise DatasetError(f"data tree {root} has no '{label}/' folder (expected {classes})")
        candidates += [
            (p, label, target)
            for p in sorted(class_dir.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda c: _inspect(c[0], limits), candidates))

    rows = []
    for (path, label, target), result in zip(candidates, results, strict=True):
        if isinstance(result, str):
            log.warning("skipping unreadable image %s: %s", path, result)
            continue
        sha, width, height = result
        rel = path.relative_to(root)
        rows.append(
            {
                "path": str(path.resolve()),
                "relpath": rel.as_posix(),
                "label": label,
                "target": target,
                "group": rel.parts[1] if len(rel.parts) > 2 else "",
                "sha256": sha,
                "width": width,
                "height": height,
                "split": assign_split(sha, val_fraction, test_fraction),
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "path",
            "relpath",
            "label",
            "target",
            "group",
            "sha256",
            "width",
            "height",
            "split",
        ],
    )
    conflicts = frame.groupby("sha256")["label"].nunique()
    conflicting = set(conflicts[conflicts > 1].index)
    if conflicting:
        log.warning("dropping %d images found under more than one class", len(conflicting))
        frame = frame[~frame["sha256"].isin(conflicting)]
    duplicates = int(frame.duplicated("sha256").sum())
    if duplicates:
        log.info("ignoring %d byte-identical duplicate files", duplicates)
        frame = frame.drop_duplicates("sha256", keep="first")
    for label in classes:
        if not (frame["label"] == label).any():
            raise DatasetError(f"data tree {root} has no readable images under '{label}/'")
    log.info(
        "indexed %d images under %s: %s",
        len(frame),
        root,
        frame.groupby(["split", "label"]).size().to_dict(),
    )
    return frame.sort_values("sha256").reset_index(drop=True)
