"""Bounded, safe decoding of untrusted video bytes into a few sampled RGB frames, and the clip rule.

A clip is judged frame by frame: :func:`sample_frames` decodes the upload under hard limits and
keeps about ``sample_fps`` frames a second, each of which goes through THE image path
(:func:`deepfakenet.preprocessing.preprocess`, :func:`deepfakenet.inference.score_batch`); the
clip's score is then a high quantile of the calibrated frame probabilities (:func:`clip_score`).
A quantile, not the mean: a clip in which only a few seconds were swapped is fake, and a mean over
the whole timeline would wash that segment out; the maximum, on the other hand, lets one odd frame
of a long real clip decide. ``training/video.py`` chooses the quantile and the threshold on
validation clips (:func:`choose_rule`).

What the decoder accepts (everything else is :class:`~deepfakenet.errors.InvalidVideoError`,
whose message says what is wrong; :class:`~deepfakenet.errors.VideoTooLargeError` for the byte
and pixel limits):

* containers MP4/MOV (3GP, M4V), Matroska/WebM and AVI, recognised by their magic bytes. FFmpeg
  is then told the container (``av.open(..., format=...)``) instead of probing every demuxer it
  has: a playlist (HLS, concat) that would make FFmpeg open other files or URLs never reaches a
  demuxer. An image is not a video: FFmpeg would open a JPEG or PNG as a one-frame "video"
  (``jpeg_pipe``, ``png_pipe``), but it is refused, with a message saying it is an image, so a
  client sends it to the image endpoint, whose decoder and limits are made for images.
* video codecs of :data:`ALLOWED_CODECS`; the first video stream that is not cover art is used.

The limits (:class:`VideoLimits`) are checked from the container's header before any frame is
decoded (bytes, frame size, duration, frame count) and again while decoding (every decoded frame
counts, its size, its timestamp, and the wall clock between packets), so a header that lies buys
nothing. A truncated or corrupt file is refused, not scored on its first half: a short read
(an incomplete packet), fewer frames than the index lists, or frames that stop well before the
stated duration of a file with no other track.

Sampling: the first frame at or after each multiple of ``1 / sample_fps`` seconds is kept. At
most ``max_samples`` frames are kept: when the samples overflow, every other sample is dropped
and the interval doubled, so they always spread over everything decoded. The header's duration
never sets the interval (it may be another track's, or a lie). Timestamps come from each frame's
``pts * time_base`` relative to the stream's start, never from ``index / fps``: a
variable-frame-rate clip (phones record them) is sampled at the right times. A frame without a
timestamp is placed one nominal frame interval after the previous one. A display rotation (a
phone held upright) is applied to the sampled frames, as EXIF orientation is to images.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from deepfakenet.errors import InvalidVideoError, VideoTooLargeError
from deepfakenet.settings import ServiceSettings

log = logging.getLogger(__name__)

#: Decoders the sampler runs on untrusted bytes (FFmpeg codec names, as ``codec_context.name``).
ALLOWED_CODECS = frozenset({"h264", "hevc", "mpeg4", "vp8", "vp9", "av1", "libdav1d", "mjpeg"})

#: Box types an ISO-BMFF (MP4, MOV, 3GP) file may start with, at byte 4.
_MP4_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
#: Magic bytes of image formats, to tell a client that sent an image what it did.
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
ACCEPTED_CONTAINERS = "MP4/MOV, Matroska/WebM or AVI"

#: What FFmpeg and PyAV raise on bad input: FFmpegError and its subclasses (InvalidDataError,
#: EOFError, ...), and plain Python errors from PyAV's wrappers (ValueError for odd values,
#: OverflowError for huge timestamps, UnicodeError for undecodable metadata, ...).
_DECODE_ERRORS = (
    av.FFmpegError,
    OSError,
    EOFError,
    ValueError,
    OverflowError,
    ArithmeticError,
    IndexError,
    KeyError,
    UnicodeError,
    RuntimeError,
    TypeError,
)

#: Bytes FFmpeg may read while probing the streams of a file it opens.
PROBE_BYTES = 2_000_000

#: Shortest accepted frame side (the crop of a thinner frame would be mostly upscaling).
MIN_SIDE = 8
#: Slack when a timestamp is compared with a sampling instant (floating-point seconds).
_EPS = 1e-6


@dataclass(frozen=True)
class VideoLimits:
    """Limits for an untrusted clip, each enforced before decoding (from the header) and during.

    The defaults are the service's (``DEEPFAKENET_MAX_VIDEO_*``, ``DEEPFAKENET_VIDEO_*``).

    Attributes:
        max_bytes: Largest accepted encoded size (over it: :class:`VideoTooLargeError`).
        max_duration_s: Longest accepted duration, from the header and from every frame's time.
        max_frames: Most frames decoded, all of them (not only the sampled ones).
        max_pixels: Largest ``width * height`` of a frame, from the header and from every frame
            (over it: :class:`VideoTooLargeError`).
        deadline_s: Wall-clock budget of the whole decode, checked between packets and frames.
        sample_fps: Frames kept per second of video (the first frame at or after each multiple
            of ``1 / sample_fps``).
        max_samples: Most frames kept; a longer clip is sampled at a lower rate so that the
            samples still spread over the whole clip.
    """

    max_bytes: int = 100 * 1024 * 1024
    max_duration_s: float = 600.0
    max_frames: int = 20_000
    max_pixels: int = 3840 * 2160
    deadline_s: float = 30.0
    sample_fps: float = 2.0
    max_samples: int = 64

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> VideoLimits:
        """The service's limits (``DEEPFAKENET_MAX_VIDEO_*``, ``DEEPFAKENET_VIDEO_*``)."""
        return cls(
            max_bytes=settings.max_video_bytes,
            max_duration_s=settings.max_video_seconds,
            max_frames=settings.max_video_frames,
            max_pixels=settings.max_video_pixels,
            deadline_s=settings.video_deadline_s,
            sample_fps=settings.video_sample_fps,
            max_samples=settings.video_max_samples,
        )

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_frames", "max_pixels", "max_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoLimits.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_duration_s", "deadline_s", "sample_fps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"VideoLimits.{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class SampledVideo:
    """The frames kept from a clip and the facts about it worth storing.

    Attributes:
        frames: Sampled frames, RGB, at native resolution, in time order.
        times: Each frame's time in seconds from the stream's start (``pts * time_base``).
        width: Frame width stated by the stream's header (as encoded, before a display
            rotation, which the sampled frames have had applied).
        height: Frame height stated by the stream's header (as encoded).
        duration_s: Duration in seconds: the header's, or the last frame's time if later.
        codec: FFmpeg decoder name (``h264``, ``mpeg4``, ...).
        container: Accepted container (``MP4/MOV``, ``Matroska/WebM``, ``AVI``).
        decoded_frames: Frames decoded to get there (every one counts against the limits).
    """

    frames: list[Image.Image]
    times: list[float]
    width: int
    height: int
    duration_s: float
    codec: str
    container: str
    decoded_frames: int
    sample_interval_s: float


def check_upload(data: bytes, limits: VideoLimits) -> str:
    """The cheap checks of :func:`sample_frames`, without opening anything: bytes, container.

    Returns:
        The accepted container's name (``MP4/MOV``, ...).

    Raises:
        InvalidVideoError: Empty, an image, or not an accepted container.
        VideoTooLargeError: Over the byte limit.
    """
    if not data:
        raise InvalidVideoError("empty body: no video bytes were sent")
    if len(data) > limits.max_bytes:
        raise VideoTooLargeError(
            f"video is {len(data)} bytes, over the limit of {limits.max_bytes} bytes"
        )
    return _sniff_container(data)[1]


def _sniff_container(data: bytes) -> tuple[str, str]:
    """``(FFmpeg demuxer, name for clients)`` from the magic bytes, or InvalidVideoError."""
    if data[4:8] in _MP4_BOXES:
        return "mov", "MP4/MOV"
    if data[:4] == b"\x1a\x45\xdf\xa3":  # EBML header
        return "matroska", "Matroska/WebM"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi", "AVI"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        image = "WEBP"
    else:
        image = next((name for magic, name in _IMAGE_MAGIC if data.startswith(magic)), "")
    if image:
        raise InvalidVideoError(
            f"this is an image ({image}), not a video: send it to the image endpoint"
        )
    raise InvalidVideoError(f"not a video in an accepted container ({ACCEPTED_CONTAINERS})")


def _pick_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is not cover art (an attached picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    audio = " (it has audio only)" if container.streams.audio else ""
    raise InvalidVideoError(f"the file holds no video track{audio}")


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    """``value * time_base`` in seconds, or None when either is unknown."""
    if value is None or time_base is None or value < 0:
        return None
    return float(value * time_base)


def _header_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """The longest duration the header states (stream or container), 0.0 when it states none."""
    stated = [
        _seconds(stream.duration, stream.time_base),
        None if container.duration is None else container.duration / av.time_base,
    ]
    return max((d for d in stated if d is not None and math.isfinite(d)), default=0.0)


def _check_header(
    stream: av.VideoStream, duration: float, codec: str | None, limits: VideoLimits
) -> None:
    """Refuse from what the header says, before a single frame is decoded."""
    if codec not in ALLOWED_CODECS:
        raise InvalidVideoError(
            f"video codec {codec or 'unknown'!r} is not accepted (accepted: "
            f"{', '.join(sorted(ALLOWED_CODECS))})"
        )
    width, height = stream.codec_context.width, stream.codec_context.height
    if (
        width
        and height
        and (min(width, height) < MIN_SIDE or max(width, height) > 16 * min(width, height))
    ):
        # A 65535 x 2 stream is few pixels, but each sampled frame would be upscaled to the
        # model's crop on its short side: gigabytes per frame.
        raise InvalidVideoError(
            f"video frames are {width}x{height}: sides of at least {MIN_SIDE} pixels and an "
            "aspect ratio up to 16:1 are accepted"
        )
    if width * height > limits.max_pixels:
        raise VideoTooLargeError(
            f"video frames are {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} pixels"
        )
    if duration > limits.max_duration_s:
        raise InvalidVideoError(
            f"video lasts {duration:.1f} s, over the limit of {limits.max_duration_s:g} s: "
            "send a shorter clip"
        )
    if stream.frames and stream.frames > limits.max_frames:
        raise InvalidVideoError(
            f"video has {stream.frames} frames, over the limit of {limits.max_frames} frames"
        )


class _Sampler:
    """Keeps the first frame at or after each sampling instant, at most ``max_samples`` of them.

    The instants are multiples of ``interval``, first ``1 / sample_fps``; never widened from what
    the header says (a silent audio track of 500 s beside a 10 s video would otherwise leave two
    samples). When the samples overflow, every other sample is dropped and the
    interval doubled, so the kept frames always spread over everything decoded so far.
    """

    def __init__(self, limits: VideoLimits) -> None:
        self.max_samples = limits.max_samples
        self.interval = 1.0 / limits.sample_fps
        self.next_time = 0.0
        self.frames: list[Image.Image] = []
        self.times: list[float] = []

    def wants(self, t: float) -> bool:
        """Whether a frame at time ``t`` is the first at or after the next instant."""
        return t >= self.next_time - _EPS

    def add(self, t: float, image: Image.Image) -> None:
        """Keep a wanted frame; thin the samples out if they overflow."""
        self.frames.append(image)
        self.times.append(max(t, 0.0))  # a timestamp a hair before the origin is the origin
        if len(self.frames) > self.max_samples:
            self.frames, self.times = self.frames[::2], self.times[::2]
            self.interval *= 2
        self.next_time = (math.floor(t / self.interval + _EPS) + 1) * self.interval


class _Clock:
    """Seconds from the stream's start of each decoded frame, from ``pts * time_base``.

    The origin is the stream's stated start time, else the first frame's timestamp. A frame
    without a timestamp (neither pts nor dts) is placed one nominal frame interval after the
    latest frame so far.
    """

    def __init__(self, stream: av.VideoStream) -> None:
        self.time_base = stream.time_base or Fraction(1, 90_000)
        self.origin = stream.start_time
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        step = float(1 / rate) if rate and rate > 0 else 1 / 30
        #: Nominal frame interval, within sane bounds whatever the header says.
        self.step = min(max(step, 1e-3), 1.0)
        #: Latest time seen so far (None before the first frame).
        self.last: float | None = None

    def time_of(self, pts: int | None) -> float:
        """The time of a frame with timestamp ``pts``; records it as seen."""
        if pts is None:
            t = 0.0 if self.last is None else self.last + self.step
        else:
            if self.origin is None:
                self.origin = pts
            t = float((pts - self.origin) * self.time_base)
        return t

    def advance(self, t: float) -> bool:
        """Record ``t``; True when it moves time forward (the first frame always does)."""
        forward = self.last is None or t > self.last
        self.last = t if self.last is None else max(self.last, t)
        return forward


def _frame_image(frame: av.VideoFrame) -> Image.Image:
    """The frame as RGB, turned upright when the stream carries a display rotation."""
    image = frame.to_image()
    rotation = round(float(getattr(frame, "rotation", 0) or 0)) % 360
    if rotation in (90, 180, 270):
        # The display matrix's angle is counter-clockwise, as PIL's rotate.
        image = image.rotate(rotation, expand=True)
    return image


def _decoder_max_pixels(limits: VideoLimits) -> int:
    """FFmpeg's own ``max_pixels`` for the decoder: the limit plus room for buffer padding."""
    return int(limits.max_pixels * 1.25) + 256 * 256


def _truncated(message: str) -> InvalidVideoError:
    return InvalidVideoError(f"the video is truncated or corrupt: {message}")


def _decode(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    duration: float,
    limits: VideoLimits,
    start: float,
    keep: Callable[[Image.Image], Image.Image] | None,
) -> tuple[_Sampler, int, float]:
    """Decode every frame under the limits; return the sampler, frames decoded, last time."""
    sampler = _Sampler(limits)
    clock = _Clock(stream)
    decoded = 0

    def check_clock() -> None:
        if time.monotonic() - start > limits.deadline_s:
            raise InvalidVideoError(
                f"decoding took over {limits.deadline_s:g} s (stopped after {decoded} frames): "
                "send a shorter or smaller clip"
            )

    for packet in container.demux(stream):
        check_clock()
        if packet.is_corrupt:  # the demuxer read less than the index promised: a cut file
            raise _truncated(f"a packet is incomplete after {decoded} frames")
        for frame in packet.decode():
            decoded += 1
            if decoded > limits.max_frames:
                raise InvalidVideoError(
                    f"video has more than {limits.max_frames} frames, over the limit"
                )
            if frame.width * frame.height > limits.max_pixels:
                raise VideoTooLargeError(
                    f"a video frame is {frame.width}x{frame.height} pixels, over the limit of "
                    f"{limits.max_pixels} pixels"
                )
            t = clock.time_of(frame.pts if frame.pts is not None else frame.dts)
            if t > limits.max_duration_s:
                raise InvalidVideoError(
                    f"video runs past {limits.max_duration_s:g} s (a frame at {t:.1f} s), over "
                    "the duration limit: send a shorter clip"
                )
            # A frame out of order (a corrupt or hostile stream) is decoded but never sampled,
            # and neither is one the decoder had to patch up (concealed errors).
            if clock.advance(t) and not frame.is_corrupt and sampler.wants(t):
                image = _frame_image(frame)
                sampler.add(t, keep(image) if keep is not None else image)
            check_clock()
    last = clock.last if clock.last is not None else 0.0
    stated = stream.frames or 0
    if stated and decoded + max(2, stated // 20) < stated:
        raise _truncated(f"its index lists {stated} frames, {decoded} could be decoded")
    # A file with no track but the video one states the video's own length: frames that stop
    # well short of it are a cut file (Matroska states no frame count).
    if len(container.streams) == 1 and last + clock.step < duration - max(
        3 * clock.step, duration / 20
    ):
        raise _truncated(f"it states {duration:.1f} s but its frames stop at {last:.1f} s")
    return sampler, decoded, last


def sample_frames(
    data: bytes,
    limits: VideoLimits | None = None,
    keep: Callable[[Image.Image], Image.Image] | None = None,
) -> SampledVideo:
    """Decode untrusted video bytes under ``limits`` and keep frames at ``sample_fps``.

    Args:
        data: The encoded clip (MP4/MOV, Matroska/WebM or AVI; see the module docstring).
        limits: Byte, duration, frame, pixel and time limits and the sampling rate; defaults
            to :class:`VideoLimits`.
        keep: What to keep of each sampled frame, e.g. the model's centre crop
            (:class:`deepfakenet.preprocessing.PilCenterCrop`): ``max_samples`` whole 4K frames
            would hold 1.6 GB, their crops a few MB. None keeps whole frames.

    Returns:
        The sampled frames (RGB), their times from ``pts * time_base``, and the clip's facts.

    Raises:
        VideoTooLargeError: Over the byte limit, or frames over the pixel limit.
        InvalidVideoError: Anything else that is not a decodable clip within the limits: no
            bytes, an image, an unknown container or codec, no video track, no decodable frame,
            a truncated or corrupt file, too long, too many frames, or over the deadline.
    """
    limits = limits or VideoLimits()
    check_upload(data, limits)
    demuxer, container_name = _sniff_container(data)
    start = time.monotonic()
    try:
        with av.open(
            io.BytesIO(data),
            mode="r",
            format=demuxer,
            container_options={"probesize": str(PROBE_BYTES), "analyzeduration": "2000000"},
            # While opening, FFmpeg probes each stream and may decode frames to learn their
            # parameters: skipping every frame there keeps an oversized one from being
            # allocated before the header is checked. (A max_pixels option would do that too,
            # but FFmpeg then reports an over-limit stream as 0x0, so no size could be told.)
            options={"skip_frame": "all", "threads": "1"},
            timeout=limits.deadline_s,
            # Metadata that is not UTF-8 is replaced rather than raised.
            metadata_errors="replace",
        ) as container:
            stream = _pick_stream(container)
            codec = stream.codec_context.name if stream.codec_context is not None else None
            duration = _header_duration(container, stream)
            _check_header(stream, duration, codec, limits)
            width, height = stream.codec_context.width, stream.codec_context.height
            # The decoder itself refuses frames far over the limit (a header that lies about
            # the size) before allocating them. It checks its padded buffer (sides rounded up
            # for alignment), so an exact limit refuses a 2000x2000 frame at max_pixels=4e6
            # (EINVAL from avcodec_receive_frame): the per-frame check in _decode is exact.
            stream.codec_context.options = {"max_pixels": str(_decoder_max_pixels(limits))}
            stream.thread_type = "AUTO"
            sampler, decoded, last = _decode(container, stream, duration, limits, start, keep)
    except InvalidVideoError:
        raise
    except _DECODE_ERRORS as err:
        if time.monotonic() - start > limits.deadline_s:  # av.open's timeout interrupted FFmpeg
            raise InvalidVideoError(
                f"decoding took over {limits.deadline_s:g} s: send a shorter or smaller clip"
            ) from err
        raise InvalidVideoError(f"corrupt, truncated or unreadable video: {err}") from err
    if not sampler.frames:
        raise InvalidVideoError("the video track holds no decodable frame")
    log.debug(
        "sampled %d of %d frames of a %s %s clip in %.2f s",
        len(sampler.frames),
        decoded,
        container_name,
        codec,
        time.monotonic() - start,
    )
    return SampledVideo(
        frames=sampler.frames,
        times=sampler.times,
        width=int(width or sampler.frames[0].width),
        height=int(height or sampler.frames[0].height),
        # The header's duration when the frames bear it out, else the frames' span: the
        # container's duration may be another track's (or a lie).
        duration_s=max(duration, last) if abs(duration - last) <= 1.0 else last,
        codec=str(codec),
        container=container_name,
        decoded_frames=decoded,
        sample_interval_s=sampler.interval,
    )


def served_rule(
    labels: Mapping[str, str],
    image_threshold: float,
    override: tuple[float, float] | None = None,
    default_quantile: float = 0.9,
) -> tuple[float, float, bool]:
    """The clip rule a service applies to a model version: ``(quantile, threshold, measured)``.

    A threshold belongs to the quantile it was chosen with, so the two are taken as a pair: the
    operator's ``override``, else the pair ``make video-eval`` tagged on the version (its
    labels ``video_quantile`` / ``video_threshold``), else ``default_quantile`` with the
    model's image threshold (``measured`` False: never measured on clips).
    """
    if override is not None:
        return override[0], override[1], True
    try:
        quantile = float(labels["video_quantile"])
        threshold = float(labels["video_threshold"])
    except (KeyError, ValueError):
        return default_quantile, image_threshold, False
    if not (0.0 <= quantile <= 1.0 and 0.0 <= threshold <= 1.0):
        return default_quantile, image_threshold, False
    return quantile, threshold, True


def clip_score(frame_probs: Sequence[float] | np.ndarray, quantile: float) -> float:
    """The clip's P(fake): the ``quantile`` of its calibrated frame probabilities.

    THE aggregation rule of the video path. ``quantile=1.0`` is the most suspicious frame,
    ``0.5`` the median; ``training/video.py`` picks it on validation clips, among them clips in
    which only a segment is fake, which a high quantile catches and a mean would dilute. Linear
    interpolation between order statistics (numpy's default), so the score is continuous.

    Args:
        frame_probs: Calibrated P(fake) of each sampled frame (at least one, all finite).
        quantile: In ``[0, 1]``.

    Raises:
        ValueError: No frame, a non-finite probability, or a quantile outside ``[0, 1]``.
    """
    probs = np.asarray(frame_probs, dtype=np.float64).ravel()
    if probs.size == 0:
        raise ValueError("clip_score needs at least one frame probability")
    if not np.isfinite(probs).all():
        raise ValueError("clip_score got a non-finite frame probability")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    return float(np.quantile(probs, quantile))


@dataclass(frozen=True)
class ClipRule:
    """The clip rule chosen on validation clips: score ``quantile``, fake at ``threshold``.

    Attributes:
        quantile: Quantile of the frame probabilities (:func:`clip_score`).
        threshold: A clip is fake when its score reaches this.
        balanced_accuracy: Balanced accuracy of the rule on the clips it was chosen on.
        auroc: AUROC of the clip scores at this quantile on those clips.
    """

    quantile: float
    threshold: float
    balanced_accuracy: float
    auroc: float


def auroc(scores: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve: P(a positive outscores a negative), ties counting half.

    NaN when either class is missing.
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def balanced_accuracy(
    scores: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray, threshold: float
) -> float:
    """Mean of the true-positive and true-negative rates, deciding ``score >= threshold``."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    flagged = s >= threshold
    rates = [
        flagged[y].mean() if y.any() else np.nan,
        (~flagged[~y]).mean() if (~y).any() else np.nan,
    ]
    return float(np.nanmean(rates))


def best_threshold(
    scores: Sequence[float] | np.ndarray, targets: Sequence[int] | np.ndarray
) -> tuple[float, float]:
    """The threshold of highest balanced accuracy, ``(threshold, balanced accuracy)``.

    Maximising the balanced accuracy ``(TPR + TNR) / 2`` is maximising Youden's
    ``J = TPR - FPR = 2 * BA - 1``: the same threshold. Candidates are the midpoints between
    consecutive distinct scores (plus the lowest score), so the threshold sits in the middle of
    the gap it separates rather than on a validation clip's score; among equally good ones the
    widest gap wins (the most margin for clips not seen).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("best_threshold needs scores")
    values = np.unique(s)
    candidates = [(float(values[0]), 0.0)]
    candidates += [((lo + hi) / 2.0, hi - lo) for lo, hi in itertools.pairwise(values)]
    best = max(candidates, key=lambda c: (balanced_accuracy(s, targets, c[0]), c[1]))
    threshold = float(min(max(best[0], 0.0), 1.0))
    return threshold, balanced_accuracy(s, targets, threshold)


def choose_rule(
    frame_probs: Sequence[Sequence[float] | np.ndarray],
    targets: Sequence[int] | np.ndarray,
    quantiles: Sequence[float] = (0.5, 0.75, 0.9, 1.0),
) -> ClipRule:
    """Choose the quantile and threshold of :func:`clip_score` on labelled clips.

    Each quantile of the grid gets its best threshold (:func:`best_threshold`); the quantile of
    highest balanced accuracy wins, then of highest AUROC, then the higher quantile (it catches
    a shorter fake segment).

    Args:
        frame_probs: Each clip's calibrated frame probabilities.
        targets: Each clip's label, 1 for a clip with any fake segment.
        quantiles: The grid, each in ``[0, 1]``.
    """
    if not quantiles:
        raise ValueError("choose_rule needs at least one quantile")
    y = np.asarray(targets).astype(int)
    if len(frame_probs) != len(y) or not (y == 1).any() or not (y == 0).any():
        raise ValueError("choose_rule needs one target per clip and clips of both classes")
    rules = []
    for q in quantiles:
        scores = np.array([clip_score(p, q) for p in frame_probs])
        threshold, accuracy = best_threshold(scores, y)
        rules.append(ClipRule(float(q), threshold, accuracy, auroc(scores, y)))
    return max(rules, key=lambda r: (r.balanced_accuracy, r.auroc, r.quantile))


def peak_time(frame_probs: Sequence[float] | np.ndarray, times: Sequence[float]) -> float:
    """Time of the most suspicious sampled frame (the first one on a tie): the timeline's peak."""
    probs = np.asarray(frame_probs, dtype=np.float64)
    if probs.size == 0 or probs.size != len(times):
        raise ValueError("peak_time needs one time per frame probability, at least one")
    return float(times[int(np.argmax(probs))])
