"""In-process images/s of every inference backend: ``python benchmarks/inference_backends.py``.

Eager PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime static int8 (QDQ, per-channel), each at
the served crop size and at 224 px, batch 1, 8 and 32, on preprocessed photo crops (decode and
preprocessing are the same for all three and left out). Threads are pinned the same way for all:
``torch.set_num_threads`` and ONNX Runtime's ``intra_op_num_threads`` both get ``--threads``.

By default the network is a randomly initialised ``DeepfakeNet`` (speed does not depend on the
weights), exported and quantized here, calibrated on random crops of the bundled photos. With
``--tracking-uri`` and ``--model-ref`` a registered version is downloaded instead: its own
artifacts (``extra_files/``) are timed and the parity figures recorded at registration printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_load import jpeg_pool  # noqa: E402


def photo_batches(n: int, side: int, seed: int) -> np.ndarray:
    """``n`` bundled-photo crops (JPEG round trip) through the one preprocessing, ``side`` px."""
    from deepfakenet.imaging import decode_image
    from deepfakenet.preprocessing import preprocess

    images = [decode_image(b).image for b in jpeg_pool(n, max(side, 64), seed)]
    return preprocess(images, side).numpy()


def build_backends(
    net: object, side: int, workdir: Path, threads: int, model_dir: Path | None
) -> dict[str, object]:
    """torch, onnx and onnx-int8 backends for inputs of ``side`` px."""
    from deepfakenet.backends import (
        ONNX_FILE,
        ONNX_INT8_FILE,
        OnnxBackend,
        TorchBackend,
        artifact_dir,
    )
    from deepfakenet.export import ExportConfig, export_onnx, quantize_int8

    if model_dir is not None and (artifact_dir(model_dir) / ONNX_FILE).is_file():
        folder = artifact_dir(model_dir)
        fp32, int8 = folder / ONNX_FILE, folder / ONNX_INT8_FILE
    else:
        fp32 = export_onnx(net, workdir / ONNX_FILE)  # dynamic height/width: one file
        int8 = workdir / f"int8-{side}.onnx"
        calib = photo_batches(64, side, seed=1)
        config = ExportConfig()  # quantized as registration does (conf/export defaults)
        quantize_int8(
            fp32,
            int8,
            (calib[i : i + 16] for i in range(0, len(calib), 16)),
            config.int8_activations,
            config.int8_keep_float,
        )
    backends: dict[str, object] = {
        "torch": TorchBackend(net),
        "onnx": OnnxBackend(fp32, "onnx", threads),
    }
    if int8.is_file():
        backends["onnx-int8"] = OnnxBackend(int8, "onnx-int8", threads)
    return backends


def images_per_second(backend: object, pool: np.ndarray, batch: int, seconds: float) -> float:
    """Throughput of ``backend.run`` on batches of ``batch`` images (after one warm-up)."""
    reps = -(-batch // len(pool))
    data = np.concatenate([pool] * reps)[:batch] if reps > 1 else pool[:batch]
    backend.run(data)  # type: ignore[attr-defined]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        backend.run(data)  # type: ignore[attr-defined]
        done += batch
    return done / (time.perf_counter() - start)


def agreement(backends: dict[str, object], pool: np.ndarray) -> dict[str, float]:
    """Max |Δlogit| of each ONNX backend against torch on the benchmark's own photos."""
    ref, _ = backends["torch"].run(pool)  # type: ignore[attr-defined]
    return {
        name: float(np.abs(b.run(pool)[0] - ref).max())  # type: ignore[attr-defined]
        for name, b in backends.items()
        if name != "torch"
    }


def main() -> None:
    """Parse arguments, time every backend, print a table (and parity, for a registered model)."""
    from deepfakenet import registry
    from deepfakenet.backends import default_threads, read_parity
    from deepfakenet.models.net import DeepfakeNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="MLflow store of a registered model")
    parser.add_argument("--model-ref", default="champion", help="alias, number or latest")
    parser.add_argument("--crop", type=int, default=64, help="crop size of the random-init net")
    parser.add_argument("--sizes", type=int, nargs="+", help="input sides (default: crop, 224)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = None
        if args.tracking_uri:
            registry.use(registry.RegistryConfig(args.tracking_uri))
            model_dir, version = registry.download_model(
                "deepfakenet", args.model_ref, workdir / "m"
            )
            net = registry.load_net_from_dir(model_dir)
            print(f"model: deepfakenet version {version.version} (crop {net.crop_size})")
        else:
            torch.manual_seed(0)
            net = DeepfakeNet(crop_size=args.crop, input_filter="highpass").eval()
            print(f"model: random-init DeepfakeNet, highpass, crop {net.crop_size}")
        sizes = args.sizes or sorted({net.crop_size, 224})
        print(f"threads: {args.threads}; torch {torch.__version__}")
        rows, figures = [], {}
        for side in sizes:
            # A registered model's int8 was calibrated at its crop size; time it anywhere.
            backends = build_backends(net, side, workdir / f"s{side}", args.threads, model_dir)
            pool = photo_batches(32, side, seed=2)
            gaps = agreement(backends, pool)
            for name, backend in backends.items():
                for batch in args.batches:
                    ips = images_per_second(backend, pool, batch, args.seconds)
                    figures[f"{name}/{side}/{batch}"] = ips
                    rows.append((name, side, batch, ips, gaps.get(name)))
        base = {(s, b): figures[f"torch/{s}/{b}"] for _, s, b, _, _ in rows}
        header = ("backend", "side", "batch", "img/s", "x torch", "max|dlogit|")
        print("\n{:<10} {:>5} {:>5} {:>9} {:>8} {:>12}".format(*header))
        for name, side, batch, ips, gap in rows:
            gap_text = "-" if gap is None else f"{gap:.2e}"
            print(
                f"{name:<10} {side:>5} {batch:>5} {ips:>9.1f} {ips / base[(side, batch)]:>8.2f} "
                f"{gap_text:>12}"
            )
        parity = read_parity(model_dir) if model_dir is not None else None
        if parity:
            print("\nparity at registration (test split):")
            for name, check in parity.get("checks", {}).items():
                print(
                    f"  {name:<10} vs {check.get('reference', '-'):<6} "
                    f"{'pass' if check.get('passed') else 'FAIL'}  "
                    f"AUROC delta {check.get('auroc_delta')}  "
                    f"max source FPR delta {check.get('max_source_fpr_delta')}  "
                    f"max |dprob| {check.get('max_abs_prob_delta')}"
                )
        if args.json:
            args.json.write_text(json.dumps({"figures": figures, "parity": parity}, indent=2))


if __name__ == "__main__":
    main()
