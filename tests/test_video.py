"""Video: bounded decoding of hostile bytes, sampling by timestamp, the clip rule, test clips.

Every clip is made in memory with :func:`deepfakenet.data.clips.encode_clip` (tiny frames, a few
frames), so the unit tests run in seconds; the job test (slow) reuses the session's trained model.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from deepfakenet import registry
from deepfakenet.data.clips import ClipSpec, encode_clip, make_clips, pan_frames
from deepfakenet.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidVideoError,
    VideoTooLargeError,
)
from deepfakenet.video import (
    SampledVideo,
    VideoLimits,
    _Clock,
    _Sampler,
    best_threshold,
    choose_rule,
    clip_score,
    peak_time,
    sample_frames,
)
from tests.conftest import ROOT, TrainedRegistry, clean_env

#: Every refusal must come well within this (the limits' deadline is checked between packets).
FAST_S = 5.0


def solid_frames(n: int, size: int = 64, step: int = 20) -> list[np.ndarray]:
    """``n`` flat grey frames of brightness ``10 + step * i``: a decoded frame tells its index."""
    return [np.full((size, size, 3), min(255, 10 + step * i), np.uint8) for i in range(n)]


def noise_frames(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def brightness(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float64).mean())


def refused(data: bytes, limits: VideoLimits | None = None) -> InvalidVideoError:
    """The error ``sample_frames`` raises for ``data``, which must come fast."""
    start = time.monotonic()
    with pytest.raises(InvalidVideoError) as info:
        sample_frames(data, limits or VideoLimits(deadline_s=FAST_S))
    assert time.monotonic() - start < FAST_S
    assert str(info.value), "a refusal says what is wrong"
    return info.value


def mux(
    fmt: str, video: bool = True, audio_frames: int = 0, video_frames: int = 0, size: int = 64
) -> bytes:
    """A file with an (optionally empty) video track and/or a silent AAC track."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        streams = []
        if video:
            stream = container.add_stream("libx264", rate=10)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            frames = [
                av.VideoFrame.from_ndarray(f, format="rgb24")
                for f in noise_frames(video_frames, size)
            ]
            streams.append((stream, frames))
        if audio_frames:
            stream = container.add_stream("aac", rate=44100)
            frames = []
            for i in range(audio_frames):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 44100, i * 1024
                frames.append(frame)
            streams.append((stream, frames))
        for stream, frames in streams:
            for frame in [*frames, None]:
                for packet in stream.encode(frame):
                    container.mux(packet)
    return buf.getvalue()


# --------------------------------------------------------------------------- encode_clip


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_encode_clip_decodes_back_with_every_frame(codec):
    data = encode_clip(noise_frames(12), codec, fps=10, quality=23 if codec == "libx264" else 4)
    assert data[4:8] == b"ftyp"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        assert stream.codec_context.name == ("h264" if codec == "libx264" else "mpeg4")
    assert len(decoded) == 12
    assert {(f.width, f.height, f.format.name) for f in decoded} == {(64, 64, "yuv420p")}


def test_encode_clip_crops_odd_sides_never_resizes():
    frame = np.zeros((63, 65, 3), np.uint8)
    frame[:, -1] = 255  # the last column, which must be cropped away (not blended in)
    sampled = sample_frames(encode_clip([frame] * 3, "mpeg4", fps=10, quality=2))
    assert (sampled.width, sampled.height) == (64, 62)
    assert brightness(sampled.frames[0]) < 3


def test_encode_clip_quality_changes_the_size():
    frames = noise_frames(6)
    assert len(encode_clip(frames, "libx264", quality=18)) > len(
        encode_clip(frames, "libx264", quality=35)
    )
    assert len(encode_clip(frames, "mpeg4", quality=2)) > len(
        encode_clip(frames, "mpeg4", quality=20)
    )


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("container_format", ["mp4", "matroska"])
@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_samples_the_first_frame_at_each_instant(codec, container_format):
    data = encode_clip(
        solid_frames(12, step=20),
        codec,
        fps=4,
        quality=18 if codec == "libx264" else 2,
        container_format=container_format,
    )
    sampled = sample_frames(data, VideoLimits(sample_fps=1.0))
    assert isinstance(sampled, SampledVideo)
    assert sampled.times == pytest.approx([0.0, 1.0, 2.0])
    assert sampled.decoded_frames == 12 and sampled.duration_s == pytest.approx(3.0)
    assert sampled.codec == ("h264" if codec == "libx264" else "mpeg4")
    assert sampled.container == ("MP4/MOV" if container_format == "mp4" else "Matroska/WebM")
    assert all(f.mode == "RGB" and f.size == (64, 64) for f in sampled.frames)
    # The frames shown at 0, 1 and 2 s are frames 0, 4 and 8.
    assert [brightness(f) for f in sampled.frames] == pytest.approx([10, 90, 170], abs=4)


def test_variable_frame_rate_times_come_from_pts():
    pts = [0, 100, 150, 700, 1000, 2600]  # milliseconds, irregular
    data = encode_clip(
        solid_frames(6, step=40), "libx264", quality=10, pts=pts, time_base=Fraction(1, 1000)
    )
    sampled = sample_frames(data, VideoLimits(sample_fps=2.0))
    # Instants 0, 0.5, 1.0, 1.5 (-> 2.6), 2.0 and 2.5 (both already past): frames 0, 3, 4, 5.
    assert sampled.times == pytest.approx([0.0, 0.7, 1.0, 2.6])
    assert [brightness(f) for f in sampled.frames] == pytest.approx([10, 130, 170, 210], abs=4)
    assert sampled.duration_s == pytest.approx(2.6, abs=0.05)
    dense = sample_frames(data, VideoLimits(sample_fps=10.0))
    assert dense.times == pytest.approx([0.0, 0.1, 0.7, 1.0, 2.6])


def test_a_long_clip_is_sampled_over_its_whole_length():
    data = encode_clip(solid_frames(40, size=32, step=6), "mpeg4", fps=2, quality=2)  # 20 s
    sampled = sample_frames(data, VideoLimits(sample_fps=2.0, max_samples=8))
    # Thinned twice (0.5 s -> 2 s -> 4 s): between max_samples / 2 and max_samples frames, evenly
    # spread, and the rate actually used is reported.
    assert len(sampled.frames) == 5 and sampled.decoded_frames == 40
    assert sampled.times == pytest.approx([0.0, 4.0, 8.0, 12.0, 16.0])
    assert sampled.sample_interval_s == pytest.approx(4.0)


def test_another_track_s_long_duration_does_not_thin_the_sampling():
    """A silent audio track of 500 s beside a 10 s video: the header says 500 s, but the samples
    come at the configured rate over the video (the header never sets the interval)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        video = container.add_stream("libx264", rate=10)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=8000)
        for frame in noise_frames(100, size=32):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        for i in range(500 * 8000 // 1024):
            silent = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            silent.sample_rate, silent.pts = 8000, i * 1024
            for packet in audio.encode(silent):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    sampled = sample_frames(buf.getvalue(), VideoLimits(sample_fps=2.0))
    assert len(sampled.frames) == 20 and sampled.times[-1] == pytest.approx(9.5)
    assert sampled.duration_s < 11


def test_sampler_without_a_stated_duration_thins_out_evenly():
    sampler = _Sampler(VideoLimits(sample_fps=2.0, max_samples=10))
    blank = Image.new("RGB", (2, 2))
    for i in range(300):  # 30 s at 10 fps, duration unknown in advance
        t = i / 10
        if sampler.wants(t):
            sampler.add(t, blank)
    assert 5 <= len(sampler.times) <= 10
    assert sampler.times[0] == 0.0 and sampler.times[-1] >= 24.0
    gaps = np.diff(sampler.times)
    assert gaps.min() == pytest.approx(gaps.max())


def test_packets_without_pts_are_timed():
    # AVI stores no timestamps at all: the demuxer derives them, and sampling still works.
    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        packets = []
        for frame in [*solid_frames(10, size=32), None]:
            packets += stream.encode(
                None if frame is None else av.VideoFrame.from_ndarray(frame, format="rgb24")
            )
        for packet in packets:
            packet.pts = packet.dts = None
            container.mux(packet)
    sampled = sample_frames(buf.getvalue(), VideoLimits(sample_fps=2.0))
    assert sampled.container == "AVI" and sampled.decoded_frames == 10
    assert sampled.times == pytest.approx([0.0, 0.6, 1.0, 1.6])


def test_a_frame_without_any_timestamp_follows_the_previous_one():
    clock = _Clock.__new__(_Clock)
    clock.time_base, clock.origin, clock.step, clock.last = Fraction(1, 1000), None, 0.04, None
    assert clock.time_of(None) == 0.0 and clock.advance(0.0)
    assert clock.time_of(500) == 0.0  # the first timestamp seen becomes the origin
    assert clock.advance(0.0) is False  # not forward: never sampled twice
    assert clock.time_of(900) == pytest.approx(0.4) and clock.advance(0.4)
    assert clock.time_of(None) == pytest.approx(0.44)


def test_display_rotation_is_applied():
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, :32] = 255  # the left half white
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise, as a phone held upright records
        for item in [av.VideoFrame.from_ndarray(frame, format="rgb24"), None]:
            for packet in stream.encode(item):
                container.mux(packet)
    sampled = sample_frames(buf.getvalue())
    pixels = np.asarray(sampled.frames[0], dtype=np.float64)
    assert sampled.frames[0].size == (32, 64)  # upright
    assert pixels[:8].mean() < 20 and pixels[-8:].mean() > 235  # left side went to the bottom
    assert (sampled.width, sampled.height) == (64, 32)  # as encoded


# --------------------------------------------------------------------------- hostile input


def test_errors_are_the_image_errors_family():
    assert issubclass(InvalidVideoError, InvalidImageError)
    assert issubclass(VideoTooLargeError, InvalidVideoError)
    assert issubclass(VideoTooLargeError, ImageTooLargeError)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (os.urandom(20_000), "accepted container"),
        (b"\x00\x00\x00\x20ftypisom" + os.urandom(20_000), "unreadable"),
        (b"\x1a\x45\xdf\xa3" + os.urandom(20_000), "unreadable"),
        (b"RIFF\x00\x00\x00\x00AVI " + os.urandom(20_000), "video"),
        (b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nfile:///etc/passwd\n", "accepted container"),
    ],
    ids=["empty", "random", "random-mp4", "random-mkv", "random-avi", "playlist"],
)
def test_not_a_video(data, says):
    assert says in str(refused(data))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_an_image_is_not_a_video(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, fmt)
    assert f"image ({fmt})" in str(refused(buf.getvalue()))


def test_audio_only():
    assert "audio only" in str(refused(mux("mp4", video=False, audio_frames=20)))


def test_zero_video_frames():
    # Matroska keeps an empty video track beside the audio; the MP4 muxer drops it.
    assert "no decodable frame" in str(refused(mux("matroska", audio_frames=20)))
    assert "no video track" in str(refused(mux("mp4", audio_frames=20)))


@pytest.mark.parametrize(
    ("codec", "container_format", "faststart"),
    [
        ("libx264", "mp4", False),  # the index (moov) is at the end: gone
        ("libx264", "mp4", True),  # the index first, the media data cut
        ("mpeg4", "mp4", True),
        ("libx264", "matroska", False),
        ("mpeg4", "avi", False),
    ],
)
def test_truncated_at_half(codec, container_format, faststart):
    data = encode_clip(
        noise_frames(20), codec, fps=10, container_format=container_format, faststart=faststart
    )
    assert sample_frames(data).decoded_frames == 20
    refused(data[: len(data) // 2])


def test_huge_resolution_refused_from_the_header():
    data = encode_clip([np.zeros((2000, 2000, 3), np.uint8)] * 2, "mpeg4", quality=31)
    err = refused(data, VideoLimits(max_pixels=1_000_000))
    assert isinstance(err, VideoTooLargeError)
    assert "2000x2000" in str(err) and "1000000" in str(err)
    assert sample_frames(data, VideoLimits(max_pixels=4_000_000)).width == 2000


def test_too_many_bytes():
    data = encode_clip(noise_frames(4), "mpeg4")
    err = refused(data, VideoLimits(max_bytes=len(data) - 1))
    assert isinstance(err, VideoTooLargeError) and "bytes" in str(err)


def test_hundred_hour_header_refused_before_decoding():
    hours = 100 * 3600 * 1000
    data = encode_clip(
        noise_frames(3), "libx264", pts=[0, 1000, hours], container_format="matroska"
    )
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / av.time_base > 99 * 3600  # the header says 100 hours
    err = refused(data)
    assert "lasts 360000" in str(err)  # the header check, not the decoding guard


def test_frames_beyond_the_duration_limit_stop_the_decode():
    # x264's delay makes the MP4 muxer state ~3 s although the last frame is at 100 s.
    data = encode_clip(noise_frames(4), "libx264", pts=[0, 1000, 2000, 100_000])
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / av.time_base < 10
    assert "runs past 10 s" in str(refused(data, VideoLimits(max_duration_s=10)))


@pytest.mark.parametrize(
    ("container_format", "says"), [("mp4", "has 20 frames"), ("matroska", "more than 10")]
)
def test_too_many_frames(container_format, says):
    data = encode_clip(noise_frames(20, size=32), "mpeg4", container_format=container_format)
    assert says in str(refused(data, VideoLimits(max_frames=10)))


def test_wall_clock_deadline():
    data = encode_clip(noise_frames(20), "libx264")
    assert "took over" in str(refused(data, VideoLimits(deadline_s=1e-9)))


def test_garbage_inside_a_valid_container_never_escapes():
    data = bytearray(encode_clip(noise_frames(10), "libx264", faststart=True))
    rng = np.random.default_rng(3)
    for _ in range(30):
        mutated = bytearray(data)
        for i in rng.integers(len(data) // 3, len(data), 40):
            mutated[i] = int(rng.integers(0, 256))
        with contextlib.suppress(InvalidVideoError):
            sample_frames(bytes(mutated), VideoLimits(deadline_s=FAST_S))


def test_limits_are_checked():
    with pytest.raises(ValueError):
        VideoLimits(max_frames=0)
    with pytest.raises(ValueError):
        VideoLimits(sample_fps=float("nan"))


# --------------------------------------------------------------------------- the clip rule


def test_clip_score_is_a_quantile():
    probs = [0.1, 0.2, 0.3, 0.9]
    assert clip_score(probs, 1.0) == pytest.approx(0.9)
    assert clip_score(probs, 0.0) == pytest.approx(0.1)
    assert clip_score(probs, 0.5) == pytest.approx(0.25)
    assert clip_score(np.array([0.7]), 0.9) == pytest.approx(0.7)
    for bad, q in (([], 0.5), ([0.1, float("nan")], 0.5), ([0.1], 1.5)):
        with pytest.raises(ValueError):
            clip_score(bad, q)


def test_choose_rule_prefers_a_high_quantile_for_short_fake_segments():
    real = [[0.1, 0.3, 0.25, 0.3, 0.1, 0.2]] * 3
    spliced = [[0.1, 0.1, 0.95, 0.9, 0.1, 0.1]] * 3  # two fake frames of six
    rule = choose_rule(real + spliced, [0, 0, 0, 1, 1, 1], [0.5, 0.9, 1.0])
    assert rule.quantile in (0.9, 1.0) and rule.balanced_accuracy == 1.0
    assert 0.3 < rule.threshold < 0.9
    median = choose_rule(real + spliced, [0, 0, 0, 1, 1, 1], [0.5])
    assert median.balanced_accuracy < 1.0


def test_best_threshold_sits_in_the_middle_of_the_gap():
    threshold, accuracy = best_threshold([0.1, 0.2, 0.6, 0.8], [0, 0, 1, 1])
    assert threshold == pytest.approx(0.4) and accuracy == 1.0


def test_peak_time():
    assert peak_time([0.1, 0.9, 0.9, 0.2], [0.0, 0.5, 1.0, 1.5]) == 0.5


# --------------------------------------------------------------------------- test clips


@pytest.fixture(scope="module")
def two_class_images(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """Dark "real" and bright "fake" 40-48 px PNGs: a decoded frame tells its class."""
    root = tmp_path_factory.mktemp("clip-images")
    rng = np.random.default_rng(0)
    paths: dict[str, list[Path]] = {"real": [], "fake": []}
    for label, level in (("real", 40), ("fake", 215)):
        for i in range(6):
            side = int(rng.integers(40, 49))
            pixels = np.clip(rng.normal(level, 8, (side, side + 2, 3)), 0, 255).astype(np.uint8)
            path = root / f"{label}_{i}.png"
            Image.fromarray(pixels).save(path)
            paths[label].append(path)
    return paths["real"], paths["fake"]


def test_pan_frames_are_windows_at_native_resolution():
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    frames = pan_frames(image, 32, 32, 12, np.random.default_rng(2))
    assert all(f.shape == (32, 32, 3) for f in frames)
    assert any(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))
    for frame in frames:  # each frame is an exact window of the image: never resampled
        assert any(
            np.array_equal(frame, image[y : y + 32, x : x + 32])
            for y in range(9)
            for x in range(19)
        )


def test_spliced_clip_span_matches_what_is_shown(two_class_images):
    real, fake = two_class_images
    clips = make_clips(
        real,
        fake,
        n_per_kind=3,
        seed=5,
        seconds_per_image=0.4,
        fps=10,
        images_per_clip=5,
        size=(32, 32),
    )
    assert [spec.kind for spec, _ in clips] == ["real", "fake", "spliced"] * 3
    assert {spec.codec for spec, _ in clips} == {"libx264", "mpeg4"}
    for spec, data in clips:
        assert isinstance(spec, ClipSpec) and len(spec.images) == len(spec.labels) == 5
        assert spec.duration_s == pytest.approx(2.0)
        sampled = sample_frames(data, VideoLimits(sample_fps=10.0))
        assert sampled.decoded_frames == 20 and (sampled.width, sampled.height) == (32, 32)
        bright = [brightness(f) > 128 for f in sampled.frames]
        if spec.kind == "spliced":
            fake_at = [i for i, label in enumerate(spec.labels) if label == "fake"]
            assert fake_at == list(range(fake_at[0], fake_at[-1] + 1))  # one contiguous run
            assert fake_at[0] > 0 and fake_at[-1] < 4  # strictly inside real images
            assert spec.fake_span == pytest.approx((fake_at[0] * 0.4, (fake_at[-1] + 1) * 0.4))
            start, end = spec.fake_span
            assert bright == [start - 1e-6 <= t < end - 1e-6 for t in sampled.times]
            assert spec.target == 1
        else:
            assert spec.fake_span is None
            assert all(b == (spec.kind == "fake") for b in bright)


# --------------------------------------------------------------------------- the job


def run_video_job(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "training/video.py",
            f"paths.root_dir={root}",
            f"hydra.run.dir={root}/logs/video",
            "progress=false",
            *args,
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_video_job_chooses_and_reports_the_rule(trained_registry: TrainedRegistry, tiny_data: Path):
    result = run_video_job(
        trained_registry.root,
        f"paths.data_dir={tiny_data}",
        f"registry.tracking_uri={trained_registry.tracking_uri}",
        "data.val_fraction=0.25",
        "data.test_fraction=0.25",
        "data.num_workers=0",
        "clips.n_per_kind=3",
        "clips.images_per_clip=4",
        "clips.seconds_per_image=0.4",
        "clips.fps=10",
        "clips.size=[32,32]",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "DEEPFAKENET_VIDEO_QUANTILE=" in output and "DEEPFAKENET_VIDEO_THRESHOLD=" in output
    report = json.loads((trained_registry.root / "logs" / "video" / "video.json").read_text())
    assert report["model_version"] == "1" and report["rule"]["quantile"] in (0.5, 0.75, 0.9, 1.0)
    assert 0.0 <= report["rule"]["threshold"] <= 1.0
    assert report["test"]["n_clips"] == 9 and report["val"]["n_clips"] == 9
    assert {row["condition"] for row in report["by_condition"]} <= {
        "libx264/crf18",
        "libx264/crf23",
        "libx264/crf28",
        "mpeg4/q2",
        "mpeg4/q5",
    }
    assert report["test"]["localisation"] is not None
    run = MlflowClient(trained_registry.tracking_uri).get_run(report["mlflow_run_id"])
    assert run.data.tags["deepfakenet.video"] == "true" and run.data.tags["model_version"] == "1"
    assert "video/test/n_clips" in run.data.metrics
    # The rule travels with the version: the service reads it from the version's labels.
    version = MlflowClient(trained_registry.tracking_uri).get_model_version("deepfakenet", "1")
    labels = registry.version_labels(version)
    assert float(labels["video_quantile"]) == report["rule"]["quantile"]
    assert float(labels["video_threshold"]) == pytest.approx(report["rule"]["threshold"], abs=1e-6)


@pytest.mark.slow
def test_video_job_without_a_champion_is_refused(tmp_path: Path, tiny_data: Path):
    result = run_video_job(
        tmp_path,
        f"paths.data_dir={tiny_data}",
        f"registry.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    assert result.returncode == 2, (result.stdout + result.stderr)[-4000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("video: ")]
    assert len(lines) == 1 and "champion" in lines[0]


def test_job_config_samples_as_the_service_does(monkeypatch):
    from deepfakenet.settings import ServiceSettings
    from tests.conftest import compose_config

    for name in [n for n in os.environ if n.startswith("DEEPFAKENET_")]:
        monkeypatch.delenv(name)  # the defaults, not this machine's settings
    cfg = compose_config("video.yaml")
    limits = VideoLimits(**cfg.sampling)
    service = ServiceSettings()
    assert limits == VideoLimits(
        max_bytes=service.max_video_bytes,
        max_duration_s=service.max_video_seconds,
        max_frames=service.max_video_frames,
        max_pixels=service.max_video_pixels,
        deadline_s=service.video_deadline_s,
        sample_fps=service.video_sample_fps,
        max_samples=service.video_max_samples,
    )
    assert limits == VideoLimits(), "the library's defaults are the service's"
    assert all(0 <= q <= 1 for q in cfg.quantiles) and cfg.model_ref == "champion"


def test_the_served_rule_is_a_pair_from_one_source():
    from deepfakenet.video import served_rule

    tagged = {"video_quantile": "1", "video_threshold": "0.954271"}
    assert served_rule(tagged, 0.4) == (1.0, 0.954271, True)
    assert served_rule(tagged, 0.4, override=(0.75, 0.6)) == (0.75, 0.6, True)
    # No rule, half a rule, a broken or out-of-range tag: the default quantile at the image
    # threshold, flagged as unmeasured (the service warns).
    for labels in ({}, {"video_quantile": "1"}, {**tagged, "video_threshold": "x"},
                   {**tagged, "video_threshold": "7"}):  # fmt: skip
        assert served_rule(labels, 0.4, default_quantile=0.9) == (0.9, 0.4, False), labels


def test_a_clip_threshold_cannot_be_set_without_its_quantile(monkeypatch):
    from pydantic import ValidationError

    from deepfakenet.settings import ServiceSettings

    monkeypatch.setenv("DEEPFAKENET_VIDEO_THRESHOLD", "0.9")
    with pytest.raises(ValidationError, match="together"):
        ServiceSettings()
    monkeypatch.setenv("DEEPFAKENET_VIDEO_QUANTILE", "1.0")
    settings = ServiceSettings()
    assert (settings.video_quantile, settings.video_threshold) == (1.0, 0.9)


def test_thin_frames_are_refused_from_the_header():
    data = encode_clip([np.zeros((4, 640, 3), np.uint8)] * 2, "mpeg4")
    assert "sides of at least" in str(refused(data))
