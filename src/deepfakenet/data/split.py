"""Scan an image tree and split it by photograph, with a stable hash.

Many files can come from one photograph: the generator draws several crops of each photo, and
every fake is made from a real photo's crop. Splitting those files one by one would put other
crops of a test photo (and fakes made from it) into training, so the test score would measure
memorised content. A tree that carries a manifest (``manifest.csv`` with ``path`` and ``photo``
columns, written by :mod:`deepfakenet.data.synth`) is therefore split by the hash of each file's
*photo*: every file of a photo, real or fake, lands in the same split. A file the manifest does not
list (feedback images, a user's own ImageFolder tree) is its own photo and is split by the hash of
its bytes.

Either way the split of a file depends on its key alone, never on how many other files there are
or the order they are listed in. Adding images later (the feedback loop does) therefore never
moves an old test image into training, and models trained months apart stay comparable on the
same test items. Changing the fractions or the manifest does move files: treat them as part of
the data version.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pandas as pd

from deepfakenet.errors import DatasetError, InvalidImageError
from deepfakenet.imaging import IMAGE_EXTENSIONS, DecodeLimits, decode_image
from deepfakenet.labels import LABELS

log = logging.getLogger(__name__)

#: Class folder names, in target order: ``real`` is 0, ``fake`` is 1 (``prob_fake`` = P(1)).
CLASSES: tuple[str, str] = LABELS
SPLITS: tuple[str, str, str] = ("train", "val", "test")
MANIFEST_NAME = "manifest.csv"
"""File at the root of a data tree mapping each generated file (``path``) to its ``photo``."""
_HEX64 = frozenset("0123456789abcdef")


def split_key_digest(key: str) -> str:
    """The hex digest a split is drawn from: ``key`` itself when it already is a SHA-256.

    Content hashes are used as they are (so a file keeps the split it has always had); any other
    key (a photo id such as ``skimage/astronaut``) is hashed first.
    """
    if len(key) == 64 and set(key) <= _HEX64:
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_photo_manifest(root: str | Path) -> dict[str, str]:
    """``relpath -> photo id`` from ``root/manifest.csv``; empty when the tree has none.

    Raises:
        DatasetError: If the manifest exists but lacks the ``path``/``photo`` columns.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"path", "photo"} - set(frame.columns)
    if missing:
        raise DatasetError(f"{path} lacks the column(s) {sorted(missing)}")
    if "source" in frame.columns:
        photo = frame["source"].where(frame["source"] == "", frame["source"] + "/") + frame["photo"]
    else:
        photo = frame["photo"]
    # Paths are POSIX and relative to the tree's root; forgive "./" and Windows separators.
    paths = frame["path"].map(lambda path: PurePosixPath(path.replace("\\", "/")).as_posix())
    return dict(zip(paths, photo, strict=True))


def assign_split(sha256: str, val_fraction: float, test_fraction: float) -> str:
    """Map a split key's hash to ``train``/``val``/``test``, the same way forever.

    Args:
        sha256: Hex digest of the split key (see :func:`split_key_digest`).
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
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    classes: Sequence[str] = CLASSES,
    limits: DecodeLimits | None = None,
    workers: int = 4,
) -> pd.DataFrame:
    """Index every decodable image below ``root/<class>/`` (any depth) with its split.

    Files listed in the tree's manifest are split by photo, the others by content (see the
    module docstring). Files that do not decode are skipped with a warning instead of failing a
    long run later in a data loader worker. Byte-identical files are kept once; the same bytes
    under both classes are a labelling conflict and are dropped with a warning.

    Args:
        root: The data tree; one folder per class name.
        val_fraction: Share of photos (by hash) for validation.
        test_fraction: Share of photos (by hash) for test.
        classes: Class folder names in target order.
        limits: Decode limits applied to every file.
        workers: Threads used for hashing and decode checks.

    Returns:
        A frame with ``path`` (absolute), ``relpath``, ``label``, ``target``, ``group`` (first
        folder below the class, e.g. a source or fake family; ``""`` for files directly in it),
        ``sha256``, ``photo`` (the manifest's photo id, ``""`` when unlisted), ``width``,
        ``height`` and ``split``; ordered by ``sha256`` within each class with the classes
        interleaved: a stable order that mixes classes and groups, so an evaluation loader cut
        short (Lightning's ``limit_val_batches``) still sees both classes instead of the first
        folder only.
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
    photos = read_photo_manifest(root)
    if photos:
        log.info("splitting by photo: %s lists %d files", MANIFEST_NAME, len(photos))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda c: _inspect(c[0], limits), candidates))

    rows = []
    matched = 0
    for (path, label, target), result in zip(candidates, results, strict=True):
        if isinstance(result, str):
            log.warning("skipping unreadable image %s: %s", path, result)
            continue
        sha, width, height = result
        rel = path.relative_to(root)
        photo = photos.get(rel.as_posix(), "")
        matched += bool(photo)
        key = split_key_digest(f"photo:{photo}") if photo else sha
        rows.append(
            {
                "path": str(path.resolve()),
                "relpath": rel.as_posix(),
                "label": label,
                "target": target,
                "group": rel.parts[1] if len(rel.parts) > 2 else "",
                "sha256": sha,
                "photo": photo,
                "width": width,
                "height": height,
                "split": assign_split(key, val_fraction, test_fraction),
            }
        )
    if photos and matched < len(photos):
        log.warning(
            "%s lists %d files, %d of them found: check its paths (POSIX, relative to %s)",
            MANIFEST_NAME,
            len(photos),
            matched,
            root,
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
            "photo",
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
    # Hash order within each class, the classes interleaved (real, fake, real, ...): stable,
    # and the first batches of any split hold both classes and many groups.
    frame = frame.sort_values("sha256")
    rank = frame.groupby("target").cumcount()
    order = pd.DataFrame({"rank": rank, "target": frame["target"]}).sort_values(
        ["rank", "target"], kind="stable"
    )
    return frame.loc[order.index].reset_index(drop=True)
