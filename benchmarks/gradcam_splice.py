"""Does Grad-CAM point at the fake part? Splice generator traces into real photos and check.

    python benchmarks/gradcam_splice.py                                 # the champion, data/
    python benchmarks/gradcam_splice.py --model-ref 3 --n 400
    python benchmarks/gradcam_splice.py --model-path /path/to/mlflow-model-folder
    python benchmarks/gradcam_splice.py --url http://127.0.0.1:3000     # a running service

For each of ``--n`` images: take a real photo of the data tree's *test* split (the same hash
split as training, ``--val-fraction`` / ``--test-fraction``), centre-crop it at the model's
input size (so the served crop is exactly the image and region coordinates need no mapping),
run one fake family of :data:`deepfakenet.data.fakes.FAKE_FAMILIES` over that crop and paste
back only a random square region (``--region-frac``, 25-40 % of the side by default) at a random
position. This is the honest splice: the content is the photo's own everywhere, the generator's
traces are only inside the region, so a map that points there points at the traces, not at an
object or an edge. Then Grad-CAM with target ``fake`` (in process through
:func:`deepfakenet.explain.grad_cam`, or ``POST /explain`` with ``target=fake`` on ``--url``;
note that the service records every call as a prediction in its store).

Reported per family and overall, as a markdown table:

- ``hit``: how often the CAM's peak falls inside the spliced region. The peak is taken on the
  map bilinearly upsampled to the input, as the service draws it (the centroid of the maximal
  plateau, which bilinear upsampling of a coarse map creates at the borders); ``chance`` is the
  region's mean share of the image, what a peak placed uniformly at random would score;
  ``lift`` is ``hit / chance``. A coarse map cannot place its peak anywhere, though (a 2x2
  map only at four points), so ``cell chance`` is the fairer baseline: the hit rate of a map
  whose peak *cell* is random, under the same peak rule;
- ``pointing``: the pointing game at the CAM's own resolution with a tolerance band: a hit when
  the peak *cell* of the layer's map lies within ``--tolerance`` cells (default 1) of a cell
  the region overlaps. ResNet18's ``layer4`` has stride 32, so a 64 px input gives a 2x2 map
  and a 224 px input 7x7: at 64 px every cell is within one cell of every region and this
  column is 1 by construction (its ``chance`` says so); it means something at 224 px;
- ``P(fake)``: the model's mean calibrated score of the spliced images, and ``flagged``: the
  share at or above its stored threshold (a splice of a third of the side is a mostly real
  image; the CAM question is where it looks, whatever it decides);
- ``flat``: maps that are zero everywhere, counted as misses. Grad-CAM keeps positive evidence
  only (a ReLU), so when the model finds the image real everywhere, the ``fake`` map is flat:
  a weak or well-calibrated model scoring a mostly real image often has nothing to show.
  ``hit (shown)`` and ``chance (shown)`` are the rates over the maps that are not flat, and
  ``--signed`` (in process only) explains with the signed map instead (ReLU off), whose peak is
  the region that speaks least against ``fake``, so every image counts.

On a CPU the default N=200 at a 64 px input takes well under a minute after loading the model
(about a minute at 224 px). ``--json`` also writes the per-image rows.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("gradcam_splice")

#: Default range of the region's side as a share of the image side.
REGION_FRACTION = (0.25, 0.40)

# --------------------------------------------------------------------------------------------
# Splicing and hit computation (pure; tests/test_gradcam_splice.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A square region of a square image, in pixels: rows ``top:top+size``, cols likewise."""

    top: int
    left: int
    size: int

    def share(self, side: int) -> float:
        """The region's share of a ``side x side`` image: the chance rate of a random peak."""
        return self.size * self.size / float(side * side)

    def contains(self, row: int, col: int) -> bool:
        """Whether pixel ``(row, col)`` lies inside the region."""
        return self.top <= row < self.top + self.size and self.left <= col < self.left + self.size

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the region."""
        return slice(self.top, self.top + self.size), slice(self.left, self.left + self.size)


def sample_region(
    rng: np.random.Generator, side: int, fraction: tuple[float, float] = REGION_FRACTION
) -> Region:
    """A random square region of a ``side x side`` image, its side a random share of ``side``.

    The side is rounded to an even number (at least 2) because every fake family works by 2x
    down- and upsampling: an odd region would cut one of its 2x2 phases in half.
    """
    lo, hi = fraction
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"region fraction must satisfy 0 < lo <= hi < 1, got {fraction}")
    size = max(2, 2 * round(rng.uniform(lo, hi) * side / 2.0))
    size = min(size, side - side % 2)
    top = int(rng.integers(0, side - size + 1))
    left = int(rng.integers(0, side - size + 1))
    return Region(top, left, size)


def center_crop(image: Image.Image, side: int) -> np.ndarray | None:
    """``side x side x 3`` uint8 centre crop, placed as torchvision's ``CenterCrop`` places it.

    Returns None for an image smaller than ``side``: upscaling a real photo would plant
    upsampling traces everywhere, which is exactly what the splice must confine to the region.
    """
    if min(image.size) < side:
        return None
    top = round((image.height - side) / 2.0)
    left = round((image.width - side) / 2.0)
    return np.asarray(image.convert("RGB").crop((left, top, left + side, top + side))).copy()


def splice(base: np.ndarray, donor: np.ndarray, region: Region) -> np.ndarray:
    """``base`` with the region replaced by the same-position pixels of ``donor``."""
    if base.shape != donor.shape:
        raise ValueError(f"base {base.shape} and donor {donor.shape} differ in shape")
    out = base.copy()
    rows, cols = region.slices()
    out[rows, cols] = donor[rows, cols]
    return out


def resynthesis_splice(
    base: np.ndarray,
    family: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    region: Region,
    rng: np.random.Generator,
) -> np.ndarray:
    """Run a fake family over the whole photo and keep its output inside ``region`` only.

    The family sees the whole image, so the region carries no border artefacts of its own; the
    result differs from the photo only by generator traces, and only inside the region.
    """
    return splice(base, family(base, rng), region)


def upsample_cam(cam: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear upsampling of an ``h x w`` map to ``side x side``, as Captum draws it."""
    up = F.interpolate(cam[None, None].float(), size=(side, side), mode="bilinear")
    return up[0, 0]


def cam_peak(cam: torch.Tensor, side: int) -> tuple[int, int] | None:
    """The peak pixel of the upsampled map: the centroid of its maximal plateau.

    Bilinear upsampling with ``align_corners=False`` repeats the border cells' values over a
    band, so the maximum is often a block of pixels; a plain ``argmax`` would always answer that
    block's top-left corner. None when the map is flat (nothing to point at).
    """
    up = upsample_cam(cam, side)
    top = float(up.max())
    if not math.isfinite(top) or top <= float(up.min()):
        return None
    rows, cols = torch.nonzero(up >= top - 1e-6 * max(abs(top), 1.0), as_tuple=True)
    return round(float(rows.double().mean())), round(float(cols.double().mean()))


@functools.lru_cache(maxsize=16)
def cell_peaks(grid: tuple[int, int], side: int) -> tuple[tuple[int, int], ...]:
    """Where :func:`cam_peak` lands when each cell of an ``h x w`` map is the maximum."""
    peaks = []
    for index in range(grid[0] * grid[1]):
        one_hot = torch.zeros(grid[0] * grid[1])
        one_hot[index] = 1.0
        peak = cam_peak(one_hot.view(grid), side)
        assert peak is not None  # a one-hot map is never flat
        peaks.append(peak)
    return tuple(peaks)


def cell_chance(region: Region, grid: tuple[int, int], side: int) -> float:
    """The hit rate of a map whose peak cell is random: the fair chance rate of a coarse map.

    A 2x2 map's peak can only land on four points of a 64 px image, so the region's area share
    overstates or understates (mostly understates: small regions miss all four) what luck
    alone would score; this counts the cells whose peak point the region contains.
    """
    peaks = cell_peaks(tuple(grid), side)
    return sum(region.contains(*peak) for peak in peaks) / len(peaks)


def cam_hit(cam: torch.Tensor, region: Region, side: int) -> bool:
    """Whether the CAM's peak (:func:`cam_peak`) falls inside the region; a flat map misses."""
    peak = cam_peak(cam, side)
    return peak is not None and region.contains(*peak)


def _cell_band(region: Region, grid: tuple[int, int], side: int, tolerance: int) -> torch.Tensor:
    """Boolean ``h x w`` mask: cells overlapping the region, dilated by ``tolerance`` cells."""
    h, w = grid
    row_edges = [r * side / h for r in range(h + 1)]
    col_edges = [c * side / w for c in range(w + 1)]
    rows = [
        r
        for r in range(h)
        if row_edges[r] < region.top + region.size and region.top < row_edges[r + 1]
    ]
    cols = [
        c
        for c in range(w)
        if col_edges[c] < region.left + region.size and region.left < col_edges[c + 1]
    ]
    mask = torch.zeros(h, w, dtype=torch.bool)
    r0, r1 = max(0, min(rows) - tolerance), min(h, max(rows) + tolerance + 1)
    c0, c1 = max(0, min(cols) - tolerance), min(w, max(cols) + tolerance + 1)
    mask[r0:r1, c0:c1] = True
    return mask


def pointing_hit(cam: torch.Tensor, region: Region, side: int, tolerance: int = 1) -> bool:
    """Pointing game on the map's own cells: the peak cell within ``tolerance`` cells of the region.

    A flat map misses.
    """
    if float(cam.max()) <= float(cam.min()):
        return False
    band = _cell_band(region, tuple(cam.shape), side, tolerance)
    flat_index = int(torch.argmax(cam.flatten()))
    return bool(band.flatten()[flat_index])


def pointing_chance(region: Region, grid: tuple[int, int], side: int, tolerance: int = 1) -> float:
    """The pointing game's chance rate: the share of cells inside the tolerance band."""
    return float(_cell_band(region, grid, side, tolerance).double().mean())


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a rate (95 % by default); ``(nan, nan)`` for ``n == 0``."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-family and overall rates of per-image rows (the columns :func:`score` produces)."""
    parts = [(str(family), part) for family, part in rows.groupby("family", sort=True)]
    parts.append(("all", rows))
    table = []
    for family, part in parts:
        n, hits = len(part), int(part["hit"].sum())
        lo, hi = wilson_interval(hits, n)
        chance = float(part["chance"].mean())
        shown = part[~part["flat"].astype(bool)]
        table.append(
            {
                "family": family,
                "n": n,
                "hit": hits / n,
                "hit 95% CI": f"{lo:.2f}-{hi:.2f}",
                "chance": chance,
                "lift": (hits / n) / chance if chance > 0 else math.nan,
                "cell chance": float(part["cell_chance"].mean()),
                "hit (shown)": float(shown["hit"].mean()) if len(shown) else math.nan,
                "chance (shown)": float(shown["chance"].mean()) if len(shown) else math.nan,
                "pointing": float(part["pointing"].mean()),
                "pointing chance": float(part["pointing_chance"].mean()),
                "P(fake)": float(part["prob_fake"].mean()),
                "flagged": float(part["flagged"].mean()),
                "flat": int(part["flat"].sum()),
            }
        )
    return pd.DataFrame(table)


# --------------------------------------------------------------------------------------------
# Explainers: in process or over HTTP, one interface
# --------------------------------------------------------------------------------------------


class Explainer:
    """Grad-CAM with target ``fake``: ``(cams N x h x w, prob_fake N, flagged N)`` of images."""

    side: int
    description: str

    def explain(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[float], list[bool]]:
        """Explain a batch of ``side x side x 3`` uint8 images."""
        raise NotImplementedError


class LocalExplainer(Explainer):
    """In process: the one preprocessing, then :func:`deepfakenet.explain.grad_cam`."""

    def __init__(
        self, net: torch.nn.Module, layer: str, description: str, signed: bool = False
    ) -> None:
        from deepfakenet.explain import resolve_layer

        self.net = net.eval()
        self.layer = layer
        self.signed = signed
        resolve_layer(self.net, layer)  # a wrong layer fails before any image is made
        self.side = int(self.net.crop_size)
        self.description = description + (", signed maps" if signed else "")

    def explain(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[float], list[bool]]:
        """Grad-CAM of the batch for the fake logit, and its calibrated scores."""
        from deepfakenet.explain import grad_cam
        from deepfakenet.labels import FAKE_TARGET
        from deepfakenet.preprocessing import preprocess

        batch = preprocess([Image.fromarray(image) for image in images], self.side)
        with torch.no_grad():
            prob = self.net.predict_proba(batch)
        cams = grad_cam(self.net, batch, self.layer, target=FAKE_TARGET, relu=not self.signed).cams
        flagged = self.net.decide(prob).bool().tolist()
        return cams, prob.tolist(), flagged


class HttpExplainer(Explainer):
    """Over HTTP: ``POST /explain`` with ``target=fake`` on a running service, one image a call."""

    def __init__(self, url: str, timeout_s: float = 120.0, transport: Any = None) -> None:
        from deepfakenet.service_client import ServiceClient

        self.client = ServiceClient(url, timeout_s=timeout_s, transport=transport)
        info = self.client.model_info()
        self.side = int(info["input_size"])
        self.threshold = float(info["threshold"])
        self.description = (
            f"{self.client.shown_url} (model {info.get('model_name', '?')} "
            f"v{info.get('model_version', '?')})"
        )

    def explain(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[float], list[bool]]:
        """One ``/explain`` call per image (the service explains one image at a time)."""
        from deepfakenet.labels import FAKE_LABEL

        cams, probs = [], []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")  # lossless: the traces survive
            answer = self.client.explain(buffer.getvalue(), target=FAKE_LABEL)
            cams.append(torch.tensor(answer.cam, dtype=torch.float32))
            probs.append(answer.prob_fake)
        return torch.stack(cams), probs, [p >= self.threshold for p in probs]


def load_explainer(args: argparse.Namespace) -> Explainer:
    """The explainer the arguments name: ``--url``, ``--model-path`` or the registry."""
    if args.url:
        if args.signed:
            raise SystemExit("--signed needs the model in process: the service serves ReLU'd maps")
        return HttpExplainer(args.url)
    from deepfakenet import registry

    if args.model_path:
        net = registry.load_net_from_dir(args.model_path)
        return LocalExplainer(net, args.layer, f"{args.model_path}", args.signed)
    registry.use(registry.RegistryConfig(args.tracking_uri))
    net, version = registry.load_net(args.model_name, args.model_ref)
    uri = registry.model_uri(args.model_name, version.version)
    return LocalExplainer(net, args.layer, f"{uri} ({args.model_ref})", args.signed)


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def test_reals(data_dir: Path, side: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Paths of the test split's real photos at least ``side`` pixels on the short side."""
    from deepfakenet.data.split import scan_image_tree
    from deepfakenet.labels import REAL_LABEL

    index = scan_image_tree(data_dir, val_fraction, test_fraction)
    reals = index[(index["split"] == "test") & (index["label"] == REAL_LABEL)]
    large = reals[(reals["width"] >= side) & (reals["height"] >= side)]
    if len(large) < len(reals):
        log.warning(
            "skipping %d test reals smaller than the %d px input (upscaling would plant traces)",
            len(reals) - len(large),
            side,
        )
    return large["path"].tolist()


def make_splices(
    paths: Sequence[str],
    families: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]],
    n: int,
    side: int,
    seed: int = 0,
    fraction: tuple[float, float] = REGION_FRACTION,
) -> list[tuple[str, str, Region, np.ndarray]]:
    """``n`` spliced images ``(photo path, family, region, pixels)``, families in turn.

    Photos are taken in a seeded random order (each decoded once); image ``i`` uses its own
    generator ``(seed, i)``, so the set does not depend on ``n`` or on the order of evaluation.
    """
    from deepfakenet.imaging import decode_image

    if not paths:
        raise ValueError("no real test image to splice into")
    names = sorted(families)
    order = np.random.default_rng(seed).permutation(len(paths))
    crops: dict[str, np.ndarray] = {}
    out = []
    for i in range(n):
        path = paths[order[i % len(paths)]]
        if path not in crops:
            crop = center_crop(decode_image(Path(path).read_bytes()).image, side)
            assert crop is not None  # test_reals keeps only large enough photos
            crops[path] = crop
        family = names[i % len(names)]
        rng = np.random.default_rng([seed, i])
        region = sample_region(rng, side, fraction)
        out.append(
            (path, family, region, resynthesis_splice(crops[path], families[family], region, rng))
        )
    return out


def score(
    explainer: Explainer,
    splices: Sequence[tuple[str, str, Region, np.ndarray]],
    batch_size: int = 16,
    tolerance: int = 1,
) -> pd.DataFrame:
    """Per-image rows: family, region, hit, pointing hit, their chance rates, score, flat map."""
    side = explainer.side
    rows = []
    for start in range(0, len(splices), batch_size):
        chunk = splices[start : start + batch_size]
        cams, probs, flagged = explainer.explain([pixels for *_, pixels in chunk])
        for (path, family, region, _), cam, prob, flag in zip(
            chunk, cams, probs, flagged, strict=True
        ):
            rows.append(
                {
                    "photo": Path(path).name,
                    "family": family,
                    **asdict(region),
                    "hit": cam_hit(cam, region, side),
                    "chance": region.share(side),
                    "cell_chance": cell_chance(region, tuple(cam.shape), side),
                    "pointing": pointing_hit(cam, region, side, tolerance),
                    "pointing_chance": pointing_chance(region, tuple(cam.shape), side, tolerance),
                    "prob_fake": float(prob),
                    "flagged": bool(flag),
                    "flat": float(cam.max()) <= float(cam.min()),
                    "cam_grid": "x".join(map(str, cam.shape)),
                }
            )
    return pd.DataFrame(rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model = parser.add_argument_group("model (one of)")
    model.add_argument("--url", default=None, help="a running service: call its /explain")
    model.add_argument("--model-path", default=None, help="a local MLflow model folder")
    model.add_argument(
        "--tracking-uri",
        default=f"sqlite:///{ROOT}/mlflow.db",
        help="MLflow store of the registry (default: the project's mlflow.db)",
    )
    model.add_argument("--model-name", default="deepfakenet")
    model.add_argument("--model-ref", default="champion", help="alias, version or 'latest'")
    parser.add_argument("--layer", default="layer4", help="backbone layer (in process only)")
    parser.add_argument(
        "--signed", action="store_true", help="signed maps, no ReLU (in process only)"
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="as conf/data")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="as conf/data")
    parser.add_argument("--n", type=int, default=200, help="spliced images")
    parser.add_argument("--families", nargs="+", default=None, help="default: every family")
    parser.add_argument(
        "--region-frac", type=float, nargs=2, default=REGION_FRACTION, metavar=("LO", "HI")
    )
    parser.add_argument("--tolerance", type=int, default=1, help="pointing band, in CAM cells")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write table and rows here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the benchmark, print the markdown table and return it."""
    from deepfakenet.data.fakes import FAKE_FAMILIES
    from deepfakenet.evaluation import to_markdown

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    families = {name: FAKE_FAMILIES[name] for name in (args.families or sorted(FAKE_FAMILIES))}
    start = time.perf_counter()
    explainer = load_explainer(args)
    paths = test_reals(args.data_dir, explainer.side, args.val_fraction, args.test_fraction)
    splices = make_splices(
        paths, families, args.n, explainer.side, args.seed, tuple(args.region_frac)
    )
    made = time.perf_counter()
    rows = score(explainer, splices, args.batch_size, args.tolerance)
    table = summarise(rows)
    seconds = time.perf_counter() - start
    grid = rows["cam_grid"].iloc[0] if len(rows) else "?"
    print(
        f"Grad-CAM splice benchmark: {explainer.description}, {explainer.side} px input, "
        f"CAM {grid}, target=fake, {len(rows)} splices of {len(set(rows['photo']))} test reals, "
        f"region {args.region_frac[0]:.0%}-{args.region_frac[1]:.0%} of the side, pointing "
        f"tolerance {args.tolerance} cell(s); {seconds:.0f} s "
        f"({time.perf_counter() - made:.0f} s explaining)\n"
    )
    print(to_markdown(table))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "model": explainer.description,
            "input_size": explainer.side,
            "table": json.loads(table.to_json(orient="records")),
            "rows": json.loads(rows.to_json(orient="records")),
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
