"""Served throughput and latency per backend, against the same backend in process.

``python benchmarks/serve_load.py [--crop 224] [--backends torch,onnx,onnx-int8,auto]``

For every backend (``DEEPFAKENET_BACKEND``) it starts the real service (``bentoml serve``) on a
free loopback port with a throwaway store, drives ``/predict`` with N concurrent clients posting
JPEGs (bounded by a request count and a time limit, loopback only) and measures ``/explain`` and
``/predict`` one request at a time. In the same run, before each server starts, it measures the
same backend in process: the forward pass alone at batch 1/8/32, and the whole pipeline (decode
+ preprocess + forward) at the batch size the clients can fill.

The model is a registered one (default: the champion of ``sqlite:///mlflow.db``, what
``make demo`` trains), served with its own artifacts at its own crop. ``--crop N`` re-registers
its weights in a temporary MLflow store with ONNX artifacts built by today's code at ``N`` px
(the net is fully convolutional, so ``--crop 224`` serves the demo net at 224 px), their parity
checked on the test split of ``data/`` at that size, as registration does.

Goals (issue 12): 16 clients, 0 errors, p99 <= 3 x p50; the default backend >= 2 x torch served
at the demo crop and >= 3 x at 224 px; every backend >= 0.8 x its own in-process pipeline;
/explain p50 <= 3 x /predict p50.
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


def register_at_crop(tracking_uri: str, ref: str, crop: int, workdir: Path) -> tuple[str, str]:
    """Re-register a version's weights at another input size, with artifacts built there.

    The ONNX export, int8 calibration and parity check run exactly as at registration
    (:func:`deepfakenet.export.build_artifacts`), on ``data/`` composed at ``eval_crop_size=crop``.
    """
    import mlflow
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from deepfakenet import export, registry

    registry.use(registry.RegistryConfig(tracking_uri))
    net, version = registry.load_net("deepfakenet", ref)
    net.crop_size = crop
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(
            "train",
            [f"paths.root_dir={ROOT}", f"data.eval_crop_size={crop}", "data.num_workers=0"],
        )
    datamodule = instantiate(cfg.data)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = registry.use(registry.RegistryConfig(uri, str(workdir / "artifacts")))
    experiment = registry.experiment_id(client, "serve-benchmark", str(workdir / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        report = export.build_artifacts(net, datamodule, workdir / "onnx", cfg.export)
        new = registry.log_and_register(
            net,
            "deepfakenet",
            tags={"data_version": f"{version.name} v{version.version} at {crop} px"},
            extra_files=report.files,
        )
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, new.version)
    return uri, registry.CHAMPION


def in_process(
    backend, net, images: list[bytes], batch_sizes: list[int], pipeline_batch: int, seconds: float
) -> dict[str, object]:
    """Images/s of one backend in this process: forward per batch size, and the pipeline.

    The pipeline is what a request costs without HTTP: decode + preprocess + forward (+ the
    calibration), at ``pipeline_batch`` images per pass.
    """
    from deepfakenet.imaging import decode_image
    from deepfakenet.inference import scores_from_outputs
    from deepfakenet.preprocessing import preprocess

    pool = preprocess([decode_image(b).image for b in images], net.crop_size).numpy()
    forward = {}
    for bs in batch_sizes:
        batch = np.resize(pool, (bs, *pool.shape[1:]))
        backend.run(batch)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            backend.run(batch)
            done += bs
        forward[bs] = done / (time.perf_counter() - start)

    def pipeline_pass(chunk: list[bytes]) -> None:
        batch = preprocess([decode_image(b).image for b in chunk], net.crop_size)
        logits, features = backend.run(batch.numpy())
        scores_from_outputs(net, torch.from_numpy(logits), torch.from_numpy(features))

    pipeline_pass(images[:pipeline_batch])  # warm-up
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        chunk = [images[(i + k) % len(images)] for k in range(pipeline_batch)]
        pipeline_pass(chunk)
        done += pipeline_batch
        i += pipeline_batch
    return {"forward": forward, "pipeline": done / (time.perf_counter() - start)}


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def import_model(workdir: Path, tracking_uri: str, ref: str) -> dict[str, str]:
    """Import the version into a temp BentoML store; return the servers' environment."""
    env = {
        **os.environ,
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
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
    return env


def start_server(workdir: Path, env: dict[str, str], backend: str) -> tuple[subprocess.Popen, str]:
    """Start ``bentoml serve`` on loopback with ``backend`` and a fresh store."""
    env = {**env, "DEEPFAKENET_BACKEND": backend, "DEEPFAKENET_HOME": str(workdir / backend)}
    port = free_port()
    with (workdir / f"server-{backend}.log").open("wb") as log:
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
    raise RuntimeError(f"service did not start; see {workdir / f'server-{backend}.log'}")


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


def bench_backend(
    name: str, args: argparse.Namespace, model_dir: Path, net, images: list[bytes], env, workdir
) -> dict[str, object]:
    """One backend: in process first, then served, in the same run."""
    from deepfakenet.backends import load_backend

    # In process the backend has the whole machine (all cores), however the server is sized.
    torch.set_num_threads(os.cpu_count() or 1)
    backend, info = load_backend(model_dir, net, name)
    local = in_process(backend, net, images, [1, 8, 32], args.clients, seconds=args.local_seconds)
    proc, url = start_server(workdir, env, name)
    try:
        served_info = httpx.get(f"{url}/model").json()
        sequential(url, "/predict", images, 5)  # warm-up
        lat, errors, wall = asyncio.run(
            drive(url, images, args.clients, args.requests, args.seconds)
        )
        predict_seq = sequential(url, "/predict", images, args.sequential)
        explain_seq = sequential(url, "/explain", images, args.sequential)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    served = len(lat) / wall
    return {
        "requested": name,
        "backend": served_info.get("backend"),
        "note": served_info.get("note") or info.get("note", ""),
        "in_process_forward_img_s": {str(k): round(v, 1) for k, v in local["forward"].items()},
        "in_process_pipeline_img_s": round(local["pipeline"], 1),
        "served_img_s": round(served, 1),
        "ratio_served_to_pipeline": round(served / local["pipeline"], 3),
        "ok": len(lat),
        "errors": len(errors),
        "first_errors": errors[:3],
        "predict_ms_under_load": {q: round(pct(lat, q), 1) for q in (50, 95, 99)},
        "p99_over_p50": round(pct(lat, 99) / pct(lat, 50), 2) if lat else None,
        "predict_p50_ms_sequential": round(pct(predict_seq, 50), 1),
        "explain_p50_ms_sequential": round(pct(explain_seq, 50), 1),
        "ratio_explain_to_predict_p50": round(
            statistics.median(explain_seq) / statistics.median(predict_seq), 2
        ),
    }


def main() -> None:
    """Run the benchmark and print a report (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=600, help="upper bound on /predict calls")
    parser.add_argument("--seconds", type=float, default=60, help="upper bound on the load phase")
    parser.add_argument("--local-seconds", type=float, default=4, help="per in-process figure")
    parser.add_argument("--crop", type=int, default=None, help="re-export and serve at this size")
    parser.add_argument("--upload", type=int, default=256, help="side of the uploaded JPEGs")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--model-ref", default="champion")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8,auto")
    parser.add_argument("--sequential", type=int, default=40, help="one-at-a-time calls per route")
    parser.add_argument("--workers", type=int, default=None, help="DEEPFAKENET_WORKERS")
    parser.add_argument("--threads", type=int, default=None, help="DEEPFAKENET_THREADS")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from deepfakenet import registry

    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    uri, ref = args.tracking_uri, args.model_ref
    registry.use(registry.RegistryConfig(uri))
    if args.crop is not None:
        uri, ref = register_at_crop(uri, ref, args.crop, workdir)
        registry.use(registry.RegistryConfig(uri))
    model_dir, version = registry.download_model("deepfakenet", ref)
    net = registry.load_net_from_dir(model_dir)
    images = jpeg_pool(64, max(args.upload, net.crop_size))
    env = import_model(workdir, uri, ref)
    sizing = {"DEEPFAKENET_WORKERS": args.workers, "DEEPFAKENET_THREADS": args.threads}
    env.update({key: str(value) for key, value in sizing.items() if value is not None})

    rows = [
        bench_backend(name, args, model_dir, net, images, env, workdir)
        for name in args.backends.split(",")
    ]
    by_name = {row["requested"]: row for row in rows}
    report = {
        "cpu_count": os.cpu_count(),
        "model": f"{uri} {ref} (version {version.version})",
        "input_px": net.crop_size,
        "upload_px": max(args.upload, net.crop_size),
        "clients": args.clients,
        "workers": args.workers or 1,
        "threads": args.threads or "default",
        "backends": rows,
    }
    if "torch" in by_name and "auto" in by_name:
        report["auto_over_torch_served"] = round(
            by_name["auto"]["served_img_s"] / by_name["torch"]["served_img_s"], 2
        )
    print(json.dumps(report, indent=2))
    print(
        f"\n{'backend':<10} {'served':>8} {'pipeline':>9} {'ratio':>6} {'p50':>7} {'p95':>7} "
        f"{'p99':>7} {'err':>4} {'explain/predict':>16}"
    )
    for row in rows:
        q = row["predict_ms_under_load"]
        print(
            f"{row['requested'] + '>' + str(row['backend']):<10} {row['served_img_s']:>8} "
            f"{row['in_process_pipeline_img_s']:>9} {row['ratio_served_to_pipeline']:>6} "
            f"{q[50]:>7} {q[95]:>7} {q[99]:>7} {row['errors']:>4} "
            f"{row['ratio_explain_to_predict_p50']:>16}"
        )
    if "auto_over_torch_served" in report:
        print(f"default (auto) / torch, served: {report['auto_over_torch_served']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
