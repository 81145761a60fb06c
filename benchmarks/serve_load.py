"""Service throughput and latency against the in-process model: ``python benchmarks/serve_load.py``.

Starts the real service (``bentoml serve``) on a free loopback port with a throwaway store,
drives ``/predict`` with N concurrent clients posting 224 px JPEGs (bounded by a request count
and a time limit, loopback only), measures ``/explain`` and ``/predict`` latency one request at a
time, and in the same run measures the in-process eager PyTorch throughput of the same network
at its best batch size.

By default the served network is a randomly initialised ``DeepfakeNet`` with a 224 px input,
registered in a temporary MLflow store (speed does not depend on the weights, and 224 px is
where the model's own compute, not HTTP, is the figure of merit). ``--tracking-uri`` and
``--model-ref`` benchmark a registered model instead.

Goals (issue 3): service throughput >= 0.8 x in-process; /explain p50 <= 3 x /predict p50.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def jpeg_pool(n: int, side: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEG crops of the bundled photos (quality 90), ``side`` px square."""
    from deepfakenet.data.sources import BUNDLED_SOURCES, REAL_SOURCES
    from deepfakenet.data.synth import random_photo_crop

    rng = np.random.default_rng(seed)
    photos = [(s, p) for s in BUNDLED_SOURCES for p in REAL_SOURCES[s]]
    out = []
    for i in range(n):
        source, photo = photos[i % len(photos)]
        crop = random_photo_crop(source, photo, side, rng, scale_range=(0.6, 1.0))
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def register_model(workdir: Path, crop: int) -> tuple[str, str]:
    """Register a random-init 224 px detector in a temp MLflow store; return (uri, ref)."""
    import mlflow

    from deepfakenet import registry
    from deepfakenet.models.net import DeepfakeNet

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = registry.use(registry.RegistryConfig(uri, str(workdir / "artifacts")))
    experiment = registry.experiment_id(client, "serve-benchmark", str(workdir / "artifacts"))
    torch.manual_seed(0)
    with mlflow.start_run(experiment_id=experiment):
        version = registry.log_and_register(DeepfakeNet(crop_size=crop), "deepfakenet")
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, version.version)
    return uri, registry.CHAMPION


def in_process_throughput(
    tracking_uri: str, ref: str, images: list[bytes], batch_sizes: list[int], seconds: float
) -> dict[str, object]:
    """Eager PyTorch images/s of the served network on preprocessed batches, per batch size."""
    from deepfakenet import registry
    from deepfakenet.imaging import decode_image
    from deepfakenet.inference import score_batch
    from deepfakenet.preprocessing import preprocess

    registry.use(registry.RegistryConfig(tracking_uri))
    net, _ = registry.load_net("deepfakenet", ref)
    decoded = [decode_image(b).image for b in images]
    pool = preprocess(decoded, net.crop_size)
    per_batch = {}
    for bs in batch_sizes:
        batch = pool[:bs] if bs <= len(pool) else pool.repeat(bs // len(pool) + 1, 1, 1, 1)[:bs]
        score_batch(net, batch)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            score_batch(net, batch)
            done += bs
        per_batch[bs] = done / (time.perf_counter() - start)
    best = max(per_batch, key=per_batch.__getitem__)
    # End to end in one process too: decode + preprocess + forward, for context.
    start = time.perf_counter()
    for chunk in range(0, len(images), best):
        imgs = [decode_image(b).image for b in images[chunk : chunk + best]]
        score_batch(net, preprocess(imgs, net.crop_size))
    e2e = len(images) / (time.perf_counter() - start)
    return {"per_batch": per_batch, "best_batch": best, "best": per_batch[best], "e2e": e2e}


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, tracking_uri: str, ref: str) -> tuple[subprocess.Popen, str]:
    """Import the model into a temp BentoML store and start ``bentoml serve`` on loopback."""
    env = {
        **os.environ,
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "DEEPFAKENET_HOME": str(workdir / "var"),
    }
    subprocess.run(
        [
            sys.executable,
            "serving/import_model.py",
            f"registry.tracking_uri={tracking_uri}",
            f"model_ref={ref}",
            f"hydra.run.dir={workdir / 'hydra'}",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    with (workdir / "server.log").open("wb") as log:
        command = ["serve", "serving.service:DeepfakeDetector", "--host", "127.0.0.1"]
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), *command, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"service did not start; see {workdir / 'server.log'}")


async def drive(url: str, images: list[bytes], clients: int, requests: int, seconds: float):
    """N concurrent clients posting to /predict; returns (latencies s, errors, wall s)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            data = images[i % len(images)]
            start = time.perf_counter()
            try:
                response = await client.post(
                    "/predict", files={"image": ("x.jpg", data, "image/jpeg")}
                )
            except httpx.HTTPError as err:  # count it and go on: one timeout is a data point
                errors.append(f"{type(err).__name__}: {err}")
                continue
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(f"{response.status_code}: {response.text[:100]}")

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def sequential(url: str, route: str, images: list[bytes], n: int) -> list[float]:
    """Latencies of ``n`` requests sent one at a time."""
    out = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n):
            start = time.perf_counter()
            client.post(
                route, files={"image": ("x.jpg", images[i % len(images)], "image/jpeg")}
            ).raise_for_status()
            out.append(time.perf_counter() - start)
    return out


def pct(values: list[float], q: float) -> float:
    """The q-th percentile in milliseconds."""
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def main() -> None:
    """Run the benchmark and print a report (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=600, help="upper bound on /predict calls")
    parser.add_argument("--seconds", type=float, default=90, help="upper bound on the load phase")
    parser.add_argument("--crop", type=int, default=224, help="input size of the benchmark model")
    parser.add_argument("--tracking-uri", default=None, help="benchmark a registered model")
    parser.add_argument("--model-ref", default="champion")
    parser.add_argument("--sequential", type=int, default=40, help="one-at-a-time calls per route")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.tracking_uri:
        uri, ref = args.tracking_uri, args.model_ref
    else:
        uri, ref = register_model(workdir, args.crop)
    images = jpeg_pool(64, 224)
    torch.set_num_threads(os.cpu_count() or 1)
    local = in_process_throughput(uri, ref, images, [1, 2, 4, 8, 16, 32], seconds=4)

    proc, url = start_server(workdir, uri, ref)
    try:
        sequential(url, "/predict", images, 5)  # warm-up
        lat, errors, wall = asyncio.run(
            drive(url, images, args.clients, args.requests, args.seconds)
        )
        predict_seq = sequential(url, "/predict", images, args.sequential)
        explain_seq = sequential(url, "/explain", images, args.sequential)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    throughput = len(lat) / wall
    report = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "upload_px": 224,
        "model_input_px": args.crop if not args.tracking_uri else "registered model",
        "in_process_img_s_by_batch": {str(k): round(v, 1) for k, v in local["per_batch"].items()},
        "in_process_best_batch": local["best_batch"],
        "in_process_img_s": round(local["best"], 1),
        "in_process_e2e_img_s": round(local["e2e"], 1),
        "clients": args.clients,
        "service_requests_ok": len(lat),
        "service_errors": len(errors),
        "service_img_s": round(throughput, 1),
        "ratio_service_to_in_process": round(throughput / local["best"], 3),
        "predict_ms_under_load": {q: round(pct(lat, q), 1) for q in (50, 95, 99)},
        "predict_p50_ms_sequential": round(pct(predict_seq, 50), 1),
        "explain_p50_ms_sequential": round(pct(explain_seq, 50), 1),
        "explain_p95_ms_sequential": round(pct(explain_seq, 95), 1),
        "ratio_explain_to_predict_p50": round(
            statistics.median(explain_seq) / statistics.median(predict_seq), 2
        ),
    }
    print(json.dumps(report, indent=2))
    if errors:
        print("first errors:", errors[:3])
    print(f"goal service/in-process >= 0.8: {report['ratio_service_to_in_process']}")
    print(f"goal explain p50 <= 3 x predict p50: {report['ratio_explain_to_predict_p50']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
