"""The Grad-CAM splice benchmark's helpers: regions, splices, peaks, hits and chance rates."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmarks.gradcam_splice import (
    Region,
    cam_hit,
    cam_peak,
    cell_chance,
    cell_peaks,
    center_crop,
    make_splices,
    pointing_chance,
    pointing_hit,
    resynthesis_splice,
    sample_region,
    splice,
    summarise,
    wilson_interval,
)


def test_sample_region_is_even_inside_and_in_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        region = sample_region(rng, 64, (0.25, 0.40))
        assert region.size % 2 == 0 and 16 <= region.size <= 26
        assert 0 <= region.top <= 64 - region.size and 0 <= region.left <= 64 - region.size
    assert Region(0, 0, 16).share(64) == pytest.approx(1 / 16)
    with pytest.raises(ValueError):
        sample_region(rng, 64, (0.5, 0.2))


def test_splice_changes_only_the_region():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    donor = 255 - base
    region = Region(4, 10, 8)
    out = splice(base, donor, region)
    changed = (out != base).any(axis=2)
    assert changed[4:12, 10:18].all() and changed.sum() == 64
    assert (base == splice(base, base, region)).all()

    def invert(image, rng):
        return 255 - image

    assert (resynthesis_splice(base, invert, region, rng) == out).all()
    with pytest.raises(ValueError):
        splice(base, donor[:16], region)


def test_center_crop_matches_torchvision_and_refuses_small_images():
    from torchvision.transforms import v2

    pixels = np.random.default_rng(2).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ours = center_crop(image, 32)
    theirs = np.asarray(v2.CenterCrop(32)(image))
    assert ours is not None and (ours == theirs).all()
    assert center_crop(image, 40) is None


def test_peak_is_the_plateau_centroid_and_hits_follow_it():
    # A 2x2 map peaking at the bottom-right cell: upsampled to 64 px its maximum is the
    # bottom-right 16x16 block, so the peak sits in its middle, not at its top-left corner.
    cam = torch.tensor([[0.0, 0.2], [0.3, 1.0]])
    row, col = cam_peak(cam, 64)
    assert 48 <= row <= 63 and 48 <= col <= 63 and (row, col) != (48, 48)
    assert cam_hit(cam, Region(44, 44, 20), 64)
    assert not cam_hit(cam, Region(0, 0, 20), 64)
    assert cam_peak(torch.zeros(2, 2), 64) is None
    assert not cam_hit(torch.zeros(2, 2), Region(0, 0, 64), 64), "a flat map never hits"


def test_cell_chance_counts_where_a_coarse_peak_can_land():
    # A 2x2 map at 64 px can only peak at the middles of the four 16 px corner blocks.
    assert sorted(cell_peaks((2, 2), 64)) == [(8, 8), (8, 56), (56, 8), (56, 56)]
    assert cell_chance(Region(0, 0, 16), (2, 2), 64) == 0.25
    assert cell_chance(Region(20, 20, 20), (2, 2), 64) == 0.0, "area share 0.1, cell chance 0"
    assert cell_chance(Region(0, 0, 64), (2, 2), 64) == 1.0
    # A finer map spreads its possible peaks: the cell chance approaches the area share.
    fine = Region(64, 64, 96)
    assert cell_chance(fine, (7, 7), 224) == pytest.approx(fine.share(224), abs=0.06)


def test_pointing_game_band_and_chance():
    cam = torch.zeros(7, 7)
    cam[0, 6] = 1.0  # peak cell: top-right
    side = 224  # 32 px cells
    region = Region(0, 128, 32)  # cells (0, 4) only
    assert not pointing_hit(cam, region, side, tolerance=0)
    assert not pointing_hit(cam, region, side, tolerance=1)  # band reaches column 5
    assert pointing_hit(cam, region, side, tolerance=2)
    # Band at tolerance 1: rows 0-1, columns 3-5 -> 6 of 49 cells.
    assert pointing_chance(region, (7, 7), side, tolerance=1) == pytest.approx(6 / 49)
    # A region straddling a cell edge overlaps two cells.
    assert pointing_chance(Region(20, 20, 16), (7, 7), side, tolerance=0) == pytest.approx(4 / 49)
    # At a 2x2 map every cell is within one cell of any region: the chance says so.
    assert pointing_chance(Region(0, 0, 16), (2, 2), 64, tolerance=1) == 1.0
    assert not pointing_hit(torch.zeros(7, 7), region, side, tolerance=6)


def test_wilson_interval_and_summary():
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    rows = pd.DataFrame(
        {
            "family": ["a", "a", "b", "b"],
            "hit": [True, False, True, True],
            "chance": [0.1, 0.1, 0.2, 0.2],
            "cell_chance": [0.0, 0.25, 0.25, 0.25],
            "pointing": [True, True, False, True],
            "pointing_chance": [0.5, 0.5, 0.5, 0.5],
            "prob_fake": [0.2, 0.4, 0.6, 0.8],
            "flagged": [False, False, True, True],
            "flat": [False, False, False, True],
        }
    )
    table = summarise(rows).set_index("family")
    assert table.loc["a", "hit"] == 0.5 and table.loc["a", "lift"] == pytest.approx(5.0)
    assert table.loc["all", "n"] == 4 and table.loc["all", "hit"] == 0.75
    assert table.loc["all", "chance"] == pytest.approx(0.15)
    assert table.loc["b", "flat"] == 1 and table.loc["all", "cell chance"] == 0.1875
    assert table.loc["b", "hit (shown)"] == 1.0 and table.loc["b", "chance (shown)"] == 0.2


def test_make_splices_cycles_families_and_is_reproducible(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(
            np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        ).save(path)
        paths.append(str(path))

    def darken(image, rng):
        return image // 2

    def brighten(image, rng):
        return np.minimum(image.astype(int) * 2, 255).astype(np.uint8)

    families = {"dark": darken, "bright": brighten}
    first = make_splices(paths, families, 6, 32, seed=3)
    again = make_splices(paths, families, 6, 32, seed=3)
    assert [family for _, family, _, _ in first] == ["bright", "dark"] * 3
    for (p1, f1, r1, x1), (p2, f2, r2, x2) in zip(first, again, strict=True):
        assert (p1, f1, r1) == (p2, f2, r2) and (x1 == x2).all()
    for path, _, region, pixels in first:
        base = center_crop(Image.open(path), 32)
        changed = (pixels != base).any(axis=2)
        outside = np.ones_like(changed)
        outside[region.slices()] = False
        assert pixels.shape == (32, 32, 3) and not changed[outside].any()


def test_http_explainer_asks_for_the_fake_map_and_reads_it():
    import base64
    import io
    import json

    import httpx

    from benchmarks.gradcam_splice import HttpExplainer, score

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/model":
            return httpx.Response(
                200, json={"input_size": 64, "threshold": 0.5, "model_version": "3"}
            )
        body = request.content
        seen.append(b'name="target"\r\n\r\nfake' in body)
        image = Image.open(io.BytesIO(body[body.index(b"\x89PNG") :]))
        assert image.size == (64, 64)
        answer = {
            "prediction_id": "0" * 32,
            "label": "fake",
            "prob_fake": 0.7,
            "model_version": "3",
            "target": "fake",
            "heatmap_png": base64.b64encode(b"png").decode(),
            "cam": [[0.0, 0.0], [0.0, 1.0]],
            "layer": "layer4",
        }
        return httpx.Response(200, content=json.dumps(answer))

    explainer = HttpExplainer("http://service", transport=httpx.MockTransport(handler))
    assert explainer.side == 64
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    rows = score(explainer, [("a.png", "fam", Region(40, 40, 24), pixels)] * 3, batch_size=2)
    assert seen == [True] * 3
    assert rows["hit"].all() and rows["flagged"].all() and rows["cam_grid"].iloc[0] == "2x2"
    assert rows["prob_fake"].tolist() == [0.7] * 3
