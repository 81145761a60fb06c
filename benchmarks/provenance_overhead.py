"""Cost of reading C2PA content credentials: ``python benchmarks/provenance_overhead.py``.

Times :meth:`deepfakenet.provenance.ProvenanceReader.read` (p50/p95 over ``--repeats`` calls,
after a warm-up) on the raw bytes the service gets: a photo-like 1024x768 JPEG (a bundled photo,
resized), a 64 px version of it and the 1024x768 photo as PNG (the largest hash to verify), each
unsigned, signed (a valid signature by an untrusted test CA, read without anchors) and read with
that CA as trust anchor (Trusted). For scale it also times the service's decoder
(:func:`deepfakenet.imaging.decode_image`) on the same 1024x768 JPEG.

The images are signed in process with the tests' throwaway PKI (``tests/signing.py``, needs the
``cryptography`` dev dependency); nothing leaves the machine.

Goal (issue 14): reading a manifest adds <= 5 ms to /predict p50.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.signing import make_credentials, sign_image  # noqa: E402


def photo(size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    """A bundled photo (sklearn's ``china``, else the first bundled one) at ``size``, encoded."""
    from deepfakenet.data.sources import BUNDLED_SOURCES, REAL_SOURCES, load_photo

    source, name = ("sklearn", "china")
    if name not in REAL_SOURCES.get(source, ()):
        source = BUNDLED_SOURCES[0]
        name = REAL_SOURCES[source][0]
    img = Image.fromarray(load_photo(source, name)).convert("RGB")
    img = img.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def timings(call: Callable[[], object], repeats: int, warmup: int = 10) -> np.ndarray:
    """Wall-clock milliseconds of ``repeats`` calls of ``call``, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call()
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def main() -> None:
    """Build the images, time every case, print a table of p50/p95 in milliseconds."""
    import c2pa

    from deepfakenet.imaging import decode_image
    from deepfakenet.provenance import ProvenanceReader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per case")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    creds = make_credentials()
    big, small = photo((1024, 768)), photo((64, 64))
    big_png = photo((1024, 768), "PNG")
    signed = {
        "1024x768 JPEG": sign_image(big, "image/jpeg", creds.chain_pem, creds.key_pem),
        "64 px JPEG": sign_image(small, "image/jpeg", creds.chain_pem, creds.key_pem),
        "1024x768 PNG": sign_image(big_png, "image/png", creds.chain_pem, creds.key_pem),
    }
    with tempfile.TemporaryDirectory() as tmp:
        anchors = Path(tmp) / "ca.pem"
        anchors.write_text(creds.ca_pem)
        plain, anchored = ProvenanceReader(), ProvenanceReader(anchors)

    cases: list[tuple[str, int, Callable[[], object], str | None]] = [
        (f"unsigned {name}", len(data), lambda d=data: plain.read(d), "none")
        for name, data in (("1024x768 JPEG", big), ("64 px JPEG", small), ("1024x768 PNG", big_png))
    ]
    for name, data in signed.items():
        state = plain.read(data).validation_state
        cases.append((f"signed {name}", len(data), lambda d=data: plain.read(d), state))
    for name, data in signed.items():
        state = anchored.read(data).validation_state
        cases.append((f"signed {name}, anchors", len(data), lambda d=data: anchored.read(d), state))
    cases.append(
        ("decode_image 1024x768 JPEG (for scale)", len(big), lambda: decode_image(big), "-")
    )

    print(f"c2pa-python {c2pa.__version__} (c2pa-rs {c2pa.sdk_version()}), {args.repeats} calls")
    header = ("case", "bytes", "state", "p50 ms", "p95 ms")
    print("\n{:<46} {:>8} {:>8} {:>8} {:>8}".format(*header))
    figures = {}
    for name, size, call, state in cases:
        ms = timings(call, args.repeats)
        p50, p95 = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
        figures[name] = {"bytes": size, "state": state, "p50_ms": p50, "p95_ms": p95}
        print(f"{name:<46} {size:>8} {state or '-':>8} {p50:>8.3f} {p95:>8.3f}")
    worst = max(f["p50_ms"] for n, f in figures.items() if n.startswith("signed"))
    print(f"\nworst signed p50: {worst:.2f} ms (goal: <= 5 ms added to /predict p50)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
