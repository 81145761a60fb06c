"""What provenance and video cost when served: /predict with C2PA reading, /predict_video.

``python benchmarks/media_latency.py [--tracking-uri sqlite:///mlflow.db] [--calls 10]``

It imports the registered model (default: the champion ``make demo`` trains) into a throwaway
BentoML store, starts the real service (``bentoml serve``) on a free loopback port, and measures,
one request at a time:

* ``/predict`` on unsigned JPEGs, on the same JPEGs padded with comment segments to the size of
  their signed copies, and on the signed copies (a C2PA manifest by a test CA, not a trust
  anchor), beside :meth:`ProvenanceReader.read` alone on those bytes, in process: signed minus
  padded is what reading a manifest adds to a request (a signed file is also bigger: its
  manifest holds a thumbnail);
* ``/predict_video`` on a 10-second 720p H.264 clip (30 fps, a pan over photo crops) at the
  service's default sampling rate, with the time :func:`deepfakenet.video.sample_frames` alone
  takes on it.

Goals (issue 14): reading a manifest adds <= 5 ms to ``/predict`` p50; the 10-second 720p clip
is answered in <= 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.signing: the test CA and the signer

from serve_load import import_model, jpeg_pool, pct, sequential, start_server  # noqa: E402


def pan_clip(seconds: float, fps: int, width: int, height: int, seed: int = 0) -> bytes:
    """An H.264 clip of ``seconds`` at ``fps``: a window panning over tiled photo crops."""
    from deepfakenet.data.clips import encode_clip
    from deepfakenet.data.sources import BUNDLED_SOURCES, REAL_SOURCES
    from deepfakenet.data.synth import random_photo_crop

    rng = np.random.default_rng(seed)
    source = BUNDLED_SOURCES[0]
    photos = REAL_SOURCES[source]
    side = height // 3  # photo crops of a third of the height, tiled 3 high and 8 wide
    tiles = [random_photo_crop(source, photos[i % len(photos)], side, rng) for i in range(24)]
    strip = np.concatenate(
        [np.concatenate(tiles[r * 8 : (r + 1) * 8], axis=1) for r in range(3)], axis=0
    )
    n = int(seconds * fps)
    room = strip.shape[1] - width
    frames = [strip[:, i * room // max(1, n - 1) :][:, :width] for i in range(n)]
    return encode_clip(frames, codec="libx264", fps=fps, quality=23)


def padded_like(jpeg: bytes, size: int) -> bytes:
    """``jpeg`` grown to ``size`` bytes with comment segments (no manifest): the same upload size
    as a signed copy, so the served difference between the two is the manifest's alone."""
    out, missing = bytearray(jpeg[:2]), size - len(jpeg)
    while missing > 4:
        chunk = min(missing - 4, 65533)
        out += b"\xff\xfe" + (chunk + 2).to_bytes(2, "big") + b"\x00" * chunk
        missing -= chunk + 4
    return bytes(out + jpeg[2:])


def timed_posts(url: str, route: str, field: str, data: bytes, n: int) -> list[float]:
    """Latencies of ``n`` identical uploads, one at a time (each must answer 200)."""
    out = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(n):
            start = time.perf_counter()
            client.post(
                route, files={field: ("upload", data, "application/octet-stream")}
            ).raise_for_status()
            out.append(time.perf_counter() - start)
    return out


def main() -> None:
    """Start the service, measure, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--model-ref", default="champion")
    parser.add_argument("--calls", type=int, default=10, help="/predict_video calls")
    parser.add_argument("--predicts", type=int, default=60, help="/predict calls per kind")
    parser.add_argument("--upload", type=int, default=256, help="side of the uploaded JPEGs")
    args = parser.parse_args()

    from deepfakenet.provenance import ProvenanceReader
    from deepfakenet.video import VideoLimits, sample_frames
    from tests.signing import make_credentials, sign_image

    images = jpeg_pool(20, args.upload)
    credentials = make_credentials()
    signed = [
        sign_image(img, "image/jpeg", credentials.chain_pem, credentials.key_pem) for img in images
    ]
    padded = [padded_like(img, len(sig)) for img, sig in zip(images, signed, strict=True)]
    reader = ProvenanceReader()
    for name, pool in (("unsigned", images), ("signed", signed)):
        costs = []
        for i in range(200):
            start = time.perf_counter()
            reader.read(pool[i % len(pool)])
            costs.append(time.perf_counter() - start)
        print(f"ProvenanceReader.read, {name} JPEG: p50 {pct(costs, 50):.2f} ms")

    clip = pan_clip(10, 30, 1280, 720)
    print(f"clip: 10 s 1280x720 H.264, {len(clip) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = import_model(workdir, args.tracking_uri, args.model_ref)
        from deepfakenet.settings import ServiceSettings

        settings = ServiceSettings()
        limits = VideoLimits.from_settings(settings)
        decode = []
        for _ in range(3):
            start = time.perf_counter()
            sampled = sample_frames(clip, limits)
            decode.append(time.perf_counter() - start)
        print(
            f"sample_frames alone: {statistics.median(decode):.2f} s for "
            f"{len(sampled.frames)} frames at {settings.video_sample_fps:g} fps"
        )
        proc, url = start_server(workdir, env, os.environ.get("DEEPFAKENET_BACKEND", "auto"))
        try:
            sequential(url, "/predict", images, 5)  # warm-up
            plain = sequential(url, "/predict", images, args.predicts)
            same_size = sequential(url, "/predict", padded, args.predicts)
            with_manifest = sequential(url, "/predict", signed, args.predicts)
            print(f"/predict unsigned JPEG: p50 {pct(plain, 50):.1f} ms, p95 {pct(plain, 95):.1f}")
            print(
                f"/predict unsigned, padded to the signed size: p50 {pct(same_size, 50):.1f} ms, "
                f"p95 {pct(same_size, 95):.1f}"
            )
            print(
                f"/predict signed JPEG:   p50 {pct(with_manifest, 50):.1f} ms, "
                f"p95 {pct(with_manifest, 95):.1f}"
            )
            timed_posts(url, "/predict_video", "video", clip, 1)  # warm-up
            video = timed_posts(url, "/predict_video", "video", clip, args.calls)
            print(
                f"/predict_video 10 s 720p: p50 {pct(video, 50) / 1000:.2f} s, "
                f"max {max(video):.2f} s over {len(video)} calls"
            )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
