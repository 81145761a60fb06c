"""Offline test and validation clips made of the data tree's images: real, fake and spliced.

No video data set ships with the project, and none may be downloaded, so clips are made from
the embedded images: a *real* clip shows real images one after another, a *fake* clip fake ones,
and a *spliced* clip real images with one contiguous run of fake images in the middle (a face
swapped for a few seconds), whose time span is recorded so a timeline can be checked against it.

Each image is shown for ``seconds_per_image`` with a slow pan of one pixel per frame, so
consecutive frames differ and the encoder has motion to code, as in a real clip. Images keep
their native resolution: every frame is a window of the image (padded with black where the image
is smaller than the window), never a resized copy, because resampling would plant or erase the
very traces the detector looks at. Clips are encoded in memory as MP4 (H.264 with ``libx264`` at
a CRF, or MPEG-4 Part 2 with ``mpeg4`` at a fixed quantiser), ``yuv420p``, even sides.

Which split a clip's images come from is the caller's business (``training/video.py`` builds
validation clips from the validation split and test clips from the test split).
"""

from __future__ import annotations

import io
import itertools
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image
from rich.progress import Progress

from deepfakenet.imaging import load_image_file
from deepfakenet.labels import FAKE_LABEL, FAKE_TARGET, REAL_LABEL, REAL_TARGET

log = logging.getLogger(__name__)

ClipKind = Literal["real", "fake", "spliced"]
Codec = Literal["libx264", "mpeg4"]
KINDS: tuple[ClipKind, ...] = ("real", "fake", "spliced")
CODECS: tuple[Codec, ...] = ("libx264", "mpeg4")
#: Qualities per codec: CRF for libx264 (lower is better; 23 is FFmpeg's default), the fixed
#: quantiser (qscale) for mpeg4 (2 is near-transparent, 5 typical, 10 visibly blocky).
DEFAULT_QUALITIES: Mapping[str, tuple[int, ...]] = {"libx264": (18, 23, 28), "mpeg4": (2, 5)}


@dataclass(frozen=True)
class ClipSpec:
    """How a clip was made: enough to tell what the right answer is and where.

    Attributes:
        kind: ``real``, ``fake`` or ``spliced`` (real images around a run of fake ones).
        images: The images shown, in order, each for ``seconds_per_image``.
        labels: Each image's class (``real``/``fake``), parallel to ``images``.
        fake_span: ``(start, end)`` seconds of the fake run of a spliced clip (end exclusive);
            None for the other kinds.
        codec: ``libx264`` or ``mpeg4``.
        quality: CRF (libx264) or qscale (mpeg4).
        fps: Frame rate the clip is encoded at.
        seconds_per_image: How long each image is shown (a whole number of frames).
        width: Frame width (even).
        height: Frame height (even).
    """

    kind: ClipKind
    images: list[Path]
    labels: list[str]
    fake_span: tuple[float, float] | None
    codec: str
    quality: int
    fps: float
    seconds_per_image: float
    width: int
    height: int

    @property
    def target(self) -> int:
        """1 (fake) for fake and spliced clips: a clip with any fake segment is fake."""
        return REAL_TARGET if self.kind == "real" else FAKE_TARGET

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return len(self.images) * self.seconds_per_image

    @property
    def condition(self) -> str:
        """``codec/quality``, e.g. ``libx264/crf23`` or ``mpeg4/q5`` (for breakdowns)."""
        return f"{self.codec}/{'crf' if self.codec == 'libx264' else 'q'}{self.quality}"


def _rgb_array(frame: np.ndarray | Image.Image) -> np.ndarray:
    """An ``H x W x 3`` uint8 array of a frame (PIL images are converted to RGB first)."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"frames must be H x W x 3 uint8 arrays, got {array.dtype} {array.shape}")
    return array


def encode_clip(
    frames: Sequence[np.ndarray | Image.Image],
    codec: Codec = "libx264",
    fps: float = 25.0,
    quality: int = 23,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    container_format: str = "mp4",
    faststart: bool = False,
) -> bytes:
    """Encode RGB frames of one size into a clip in memory (``yuv420p``, even sides).

    Frames with an odd side lose their last row or column (cropped, never resized): 4:2:0
    chroma needs even sides.

    Args:
        frames: ``H x W x 3`` uint8 arrays or PIL images, all the same size.
        codec: ``libx264`` (H.264) or ``mpeg4`` (MPEG-4 Part 2).
        fps: Nominal frame rate (the frames' timestamps when ``pts`` is None).
        quality: CRF for libx264, fixed quantiser (qscale, 1-31) for mpeg4.
        pts: Explicit presentation timestamps (in ``time_base`` units), strictly increasing:
            a variable-frame-rate clip.
        time_base: Unit of ``pts`` (default ``1 / 1000`` s).
        container_format: FFmpeg muxer (``mp4``, ``matroska``, ``avi``, ``mov``).
        faststart: Put the MP4 index (``moov``) before the media data, as streaming sites do.

    Returns:
        The encoded file's bytes.
    """
    if not frames:
        raise ValueError("encode_clip needs at least one frame")
    if pts is not None and len(pts) != len(frames):
        raise ValueError(f"{len(pts)} timestamps for {len(frames)} frames")
    first = _rgb_array(frames[0])
    height, width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2
    if height < 2 or width < 2:
        raise ValueError(f"frames of {first.shape[1]}x{first.shape[0]} are too small to encode")
    rate = Fraction(fps).limit_denominator(1001)
    if faststart:
        # The muxer moves the index in a second pass over the file, which needs a real file.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip"
            _encode(frames, path, codec, rate, quality, pts, time_base, container_format, True)
            return path.read_bytes()
    buf = io.BytesIO()
    _encode(frames, buf, codec, rate, quality, pts, time_base, container_format, False)
    return buf.getvalue()


def _encode(
    frames: Sequence[np.ndarray | Image.Image],
    target: Path | io.BytesIO,
    codec: str,
    rate: Fraction,
    quality: int,
    pts: Sequence[int] | None,
    time_base: Fraction | None,
    container_format: str,
    faststart: bool,
) -> None:
    """:func:`encode_clip`'s muxing loop, into a file or a buffer."""
    first = _rgb_array(frames[0])
    height, width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2
    container_options = {"movflags": "+faststart"} if faststart else {}
    target_file = str(target) if isinstance(target, Path) else target
    with av.open(
        target_file, mode="w", format=container_format, options=container_options
    ) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if pts is not None:
            stream.codec_context.time_base = time_base or Fraction(1, 1000)
        if codec == "libx264":
            stream.options = {"crf": str(quality), "preset": "medium"}
        else:
            stream.codec_context.qmin = stream.codec_context.qmax = int(quality)
        for i, frame in enumerate(frames):
            array = _rgb_array(frame)
            if array.shape[:2] != first.shape[:2]:
                raise ValueError(
                    f"frame {i} is {array.shape[1]}x{array.shape[0]}, the first "
                    f"{first.shape[1]}x{first.shape[0]}: all frames must have one size"
                )
            video_frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(array[:height, :width]), format="rgb24"
            )
            if pts is not None:
                video_frame.pts = int(pts[i])
                video_frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _window(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` padded with black on the bottom/right to at least ``width x height``."""
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    return image


def pan_frames(
    image: np.ndarray, width: int, height: int, n_frames: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``n_frames`` windows of ``image`` at native resolution, panning one pixel per frame.

    The window starts at a random position and moves diagonally by whole pixels in a random
    direction, staying inside the image (it stands still along a side with no room to move).
    """
    image = _window(image, width, height)
    slack_x, slack_y = image.shape[1] - width, image.shape[0] - height
    x, y = int(rng.integers(0, slack_x + 1)), int(rng.integers(0, slack_y + 1))
    dx, dy = (int(v) for v in rng.choice([-1, 1], size=2))
    frames = []
    for _ in range(n_frames):
        frames.append(image[y : y + height, x : x + width])
        if not 0 <= x + dx <= slack_x:
            dx = -dx
        if not 0 <= y + dy <= slack_y:
            dy = -dy
        x = min(max(x + dx, 0), slack_x)
        y = min(max(y + dy, 0), slack_y)
    return frames


def _labels(kind: ClipKind, n_images: int, rng: np.random.Generator) -> list[str]:
    """Each image's class: all real, all fake, or a fake run strictly inside real images."""
    if kind == "real":
        return [REAL_LABEL] * n_images
    if kind == "fake":
        return [FAKE_LABEL] * n_images
    if n_images < 3:
        raise ValueError("a spliced clip needs at least 3 images (real, fake, real)")
    length = int(rng.integers(1, max(1, (n_images - 2) // 2) + 1))
    start = int(rng.integers(1, n_images - length))
    return [FAKE_LABEL if start <= i < start + length else REAL_LABEL for i in range(n_images)]


def make_clips(
    real_images: Sequence[Path],
    fake_images: Sequence[Path],
    n_per_kind: int,
    seed: int = 0,
    codecs: Sequence[Codec] = CODECS,
    qualities: Mapping[str, Sequence[int]] = DEFAULT_QUALITIES,
    seconds_per_image: float = 0.8,
    fps: float = 25.0,
    images_per_clip: int = 6,
    size: tuple[int, int] = (176, 176),
    progress: bool = False,
) -> list[tuple[ClipSpec, bytes]]:
    """``n_per_kind`` real, fake and spliced clips, spread over every codec and quality.

    Clips cycle through the ``(codec, quality)`` conditions, so each kind meets each condition
    about equally often. Images are drawn without replacement from a shuffled pool per class,
    reshuffled when it runs out: every image is used before any is shown again.

    Args:
        real_images: Image files of the real class.
        fake_images: Image files of the fake class.
        n_per_kind: Clips of each kind.
        seed: Seed of every random choice (images, pans, the fake run's place).
        codecs: Codecs used.
        qualities: Qualities per codec (CRF for libx264, qscale for mpeg4).
        seconds_per_image: How long each image is shown (rounded to whole frames).
        fps: Frame rate.
        images_per_clip: Images per clip (at least 3 for spliced clips).
        size: ``(width, height)`` of the frames (even).
        progress: Show a progress bar.

    Returns:
        ``(spec, encoded bytes)`` per clip, kinds interleaved.
    """
    if not real_images or not fake_images:
        raise ValueError("make_clips needs real and fake images")
    if images_per_clip < 3:
        raise ValueError(f"images_per_clip must be >= 3, got {images_per_clip}")
    width, height = (int(s) // 2 * 2 for s in size)
    frames_per_image = max(1, round(seconds_per_image * fps))
    shown = frames_per_image / fps
    rng = np.random.default_rng(seed)
    conditions = [(codec, int(q)) for codec in codecs for q in qualities[codec]]
    pools = {REAL_LABEL: _Pool(real_images, rng), FAKE_LABEL: _Pool(fake_images, rng)}
    jobs = [kind for _ in range(n_per_kind) for kind in KINDS]
    clips: list[tuple[ClipSpec, bytes]] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("encoding clips", total=len(jobs))
        for kind, (codec, quality) in zip(jobs, itertools.cycle(conditions), strict=False):
            labels = _labels(kind, images_per_clip, rng)
            images = [pools[label].draw() for label in labels]
            frames: list[np.ndarray] = []
            for path in images:
                pixels = np.asarray(load_image_file(path))
                frames += pan_frames(pixels, width, height, frames_per_image, rng)
            fake_at = [i for i, label in enumerate(labels) if label == FAKE_LABEL]
            span = (fake_at[0] * shown, (fake_at[-1] + 1) * shown) if kind == "spliced" else None
            spec = ClipSpec(
                kind=kind,
                images=list(images),
                labels=labels,
                fake_span=span,
                codec=codec,
                quality=quality,
                fps=fps,
                seconds_per_image=shown,
                width=width,
                height=height,
            )
            clips.append((spec, encode_clip(frames, codec, fps, quality)))
            bar.advance(task)
    log.info(
        "made %d clips (%d per kind) of %d images x %.2f s, %dx%d, conditions %s",
        len(clips),
        n_per_kind,
        images_per_clip,
        shown,
        width,
        height,
        ", ".join(f"{c}:{q}" for c, q in conditions),
    )
    return clips


class _Pool:
    """Draws paths without replacement, reshuffling when the pool runs out."""

    def __init__(self, paths: Sequence[Path], rng: np.random.Generator) -> None:
        self.paths = [Path(p) for p in paths]
        self.rng = rng
        self.queue: list[Path] = []

    def draw(self) -> Path:
        """The next path of the shuffled pool."""
        if not self.queue:
            self.queue = [self.paths[i] for i in self.rng.permutation(len(self.paths))]
        return self.queue.pop()
