"""The writer: deterministic, complete, sizes in range, manifests written, strict arguments."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfakenet.data.fakes import FAKE_FAMILIES, FakePostConfig
from deepfakenet.data.sources import BUNDLED_SOURCES, photo_source
from deepfakenet.data.split import MANIFEST_NAME, scan_image_tree
from deepfakenet.data.synth import SOURCES_TABLE, generate_dataset, main, random_photo_crop

N = 32  # per class: every family of seven, every bundled source among the reals
SOURCES = list(BUNDLED_SOURCES)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def _generate(root: Path, **kwargs) -> pd.DataFrame:
    args = {"min_size": 32, "max_size": 40, "seed": 3, "sources": SOURCES, "progress": False}
    return generate_dataset(root, N, N, **{**args, **kwargs})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return root, _generate(root, camera_p=0.5)


def test_same_arguments_give_byte_identical_files(generated, tmp_path):
    root, manifest = generated
    again = _generate(tmp_path, camera_p=0.5, workers=2)  # processes change nothing

    assert _digests(tmp_path) == _digests(root)
    assert again.equals(manifest)
    other_seed = tmp_path / "other"
    _generate(other_seed, seed=4, camera_p=0.5)
    assert set(_digests(other_seed).values()).isdisjoint(_digests(root).values())


def test_both_classes_every_family_and_source_are_written(generated):
    root, manifest = generated
    assert (manifest["label"] == "real").sum() == N and (manifest["label"] == "fake").sum() == N
    fakes = manifest[manifest["label"] == "fake"]
    reals = manifest[manifest["label"] == "real"]
    assert set(fakes["family"]) == set(FAKE_FAMILIES)
    assert set(reals["source"]) == set(SOURCES)
    assert (reals["family"] == "").all()
    for row in manifest.itertuples():
        path = root / row.path
        assert path.is_file(), path
        group = row.source if row.label == "real" else row.family
        assert path.parent == root / row.label / group
        # Fakes carry their photo in the file name, so their source can be recovered.
        assert photo_source(path.stem.rsplit("_", 1)[0]) == row.source


def test_the_camera_goes_on_reals_only_and_post_processing_on_fakes_only(generated):
    _, manifest = generated
    reals, fakes = manifest[manifest["label"] == "real"], manifest[manifest["label"] == "fake"]
    assert (reals["post"] == "").all() and (fakes["camera"] == "").all()
    assert reals["camera"].str.contains("mosaic=").any(), "some reals carry CFA traces"
    assert (reals["camera"] == "").any(), "and some do not"


def test_manifest_and_sources_table_are_written_and_split_by_photo(generated):
    root, manifest = generated
    on_disk = pd.read_csv(root / MANIFEST_NAME, keep_default_na=False)
    assert list(on_disk["path"]) == list(manifest["path"])
    table = pd.read_csv(root / SOURCES_TABLE, keep_default_na=False)
    used = set(manifest["source"] + "/" + manifest["photo"])
    assert set(table["source"] + "/" + table["photo"]) == used
    assert {"package", "version", "licence", "file"} <= set(table.columns)
    assert (table["package"] != "").all() and (table["licence"] != "").all()
    index = scan_image_tree(root, 0.2, 0.2)
    assert (index.groupby("photo")["split"].nunique() == 1).all(), "a photo on both sides"


def test_sizes_stay_within_range_and_images_are_rgb(generated):
    root, manifest = generated
    # A camera or an edit that shrinks an image may leave it a little under min_size (never
    # under 0.6x of it: the writer draws up to 1.25x larger crops); untouched images are square.
    for side in ("width", "height"):
        assert manifest[side].between(0.6 * 32, 40).all()
    untouched = manifest[(manifest["camera"] == "") & (manifest["post"] == "")]
    assert len(untouched) and untouched["width"].between(32, 40).all()
    assert (untouched["width"] == untouched["height"]).all()
    for path in list(root.rglob("*.png"))[:: max(1, 2 * N // 16)]:
        with Image.open(path) as img:
            assert img.mode == "RGB" and max(img.size) <= 40


def test_random_photo_crop_never_upscales_and_keeps_the_side():
    crop = random_photo_crop("skimage", "astronaut", 33, np.random.default_rng(0))  # odd side
    assert crop.shape == (33, 33, 3) and crop.dtype == np.uint8
    with pytest.raises(ValueError, match="exceeds"):
        random_photo_crop("skimage", "astronaut", 5000, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_real": -1}, "n_real"),
        ({"n_fake": 2.5}, "n_fake"),
        ({"n_real": 0, "n_fake": 0}, "positive"),
        ({"min_size": 4}, "min_size"),
        ({"min_size": 64, "max_size": 32}, "min_size"),
        ({"max_size": 5000}, "short side"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"scale_range": (0.8, 0.5)}, "scale_range"),
        ({"artifact_strength": 0.0}, "artifact_strength"),
        ({"camera_p": 1.5}, "camera_p"),
        ({"sources": ["nope"]}, "unknown source"),
        ({"families": ["nope"]}, "unknown family"),
        ({"families": []}, "at least one family"),
        ({"pool": "nope"}, "pool"),
    ],
)
def test_bad_arguments_are_a_clear_value_error(tmp_path, kwargs, message):
    args = {"n_real": 4, "n_fake": 4, "min_size": 32, "max_size": 40, "sources": SOURCES}
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path, progress=False, **{**args, **kwargs})
    assert not list(tmp_path.rglob("*.png")), "nothing is written when the arguments are bad"


def test_an_existing_tree_is_kept_unless_overwrite(tmp_path):
    args = {"min_size": 32, "max_size": 32, "sources": SOURCES, "progress": False}
    generate_dataset(tmp_path, 4, 4, **args)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(tmp_path, 4, 4, **args)
    generate_dataset(tmp_path, 2, 2, overwrite=True, **args)
    assert len(list(tmp_path.rglob("*.png"))) == 4
    assert len(pd.read_csv(tmp_path / MANIFEST_NAME)) == 4


def test_post_processing_settings_come_through_hydra_as_a_mapping(tmp_path):
    off = {"p_jpeg": 0.0, "p_resize": 0.0, "p_noise": 0.0}
    manifest = generate_dataset(
        tmp_path, 0, 8, min_size=32, max_size=32, sources=SOURCES, post=off, progress=False
    )
    assert (manifest["post"] == "").all()
    with pytest.raises(ValueError, match="unknown FakePostConfig field"):
        generate_dataset(tmp_path, 0, 2, sources=SOURCES, post={"p_jepg": 1}, overwrite=True)
    assert FakePostConfig(**off).p_jpeg == 0.0


def test_command_line_reports_bad_arguments_with_status_2(tmp_path):
    common = ["--out", str(tmp_path), "--no-progress", "--sources", *SOURCES]
    assert main([*common, "--n-real", "4", "--n-fake", "4", "--max-size", "9999"]) == 2
    args = ["--n-real", "2", "--n-fake", "2", "--min-size", "32", "--max-size", "32"]
    assert main([*common, *args]) == 0
    assert (tmp_path / MANIFEST_NAME).is_file() and len(list(tmp_path.rglob("*.png"))) == 4
