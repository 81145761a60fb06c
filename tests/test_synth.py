"""The embedded generator: deterministic, complete, sizes in range, strict about arguments."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfakenet.data.synth import (
    FAKE_FAMILIES,
    REAL_SOURCES,
    generate_dataset,
    main,
    photo_source,
    random_photo_crop,
)

N = 32  # per class: two full cycles of the four families, every source among the reals


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    manifest = generate_dataset(root, N, N, min_size=32, max_size=40, seed=3, progress=False)
    return root, manifest


def test_same_arguments_give_byte_identical_files(generated, tmp_path):
    root, manifest = generated
    again = generate_dataset(tmp_path, N, N, min_size=32, max_size=40, seed=3, progress=False)
    assert _digests(tmp_path) == _digests(root)
    assert again.equals(manifest)
    other_seed = tmp_path / "other"
    generate_dataset(other_seed, N, N, min_size=32, max_size=40, seed=4, progress=False)
    assert set(_digests(other_seed).values()).isdisjoint(_digests(root).values())


def test_both_classes_every_family_and_source_are_written(generated):
    root, manifest = generated
    assert (manifest["label"] == "real").sum() == N and (manifest["label"] == "fake").sum() == N
    fakes = manifest[manifest["label"] == "fake"]
    reals = manifest[manifest["label"] == "real"]
    assert set(fakes["family"]) == set(FAKE_FAMILIES)
    assert set(reals["source"]) == set(REAL_SOURCES)
    assert (reals["family"] == "").all()
    for row in manifest.itertuples():
        path = root / row.path
        assert path.is_file(), path
        group = row.source if row.label == "real" else row.family
        assert path.parent == root / row.label / group
        # Fakes carry their photo in the file name, so their source can be recovered.
        assert photo_source(path.stem.rsplit("_", 1)[0]) == row.source


def test_sizes_stay_within_range_and_images_are_rgb(generated):
    root, manifest = generated
    assert (
        manifest["width"].between(32, 40).all() and (manifest["width"] == manifest["height"]).all()
    )
    for path in list(root.rglob("*.png"))[:: max(1, 2 * N // 16)]:
        with Image.open(path) as img:
            assert img.mode == "RGB" and 32 <= img.width <= 40 and img.width == img.height


@pytest.mark.parametrize("family", sorted(FAKE_FAMILIES))
def test_each_family_keeps_the_shape_and_draws_its_own_kernels(family):
    image = random_photo_crop("skimage", "astronaut", 33, np.random.default_rng(0))  # odd side
    fake = FAKE_FAMILIES[family](image, np.random.default_rng(1))
    other = FAKE_FAMILIES[family](image, np.random.default_rng(2))
    assert fake.shape == image.shape and fake.dtype == np.uint8
    assert np.abs(fake.astype(int) - image).mean() > 0.5, "a fake must change the pixels"
    assert not np.array_equal(fake, other), "kernels are random per image, not one fixed kernel"


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
        ({"sources": ["nope"]}, "unknown source"),
        ({"families": ["nope"]}, "unknown family"),
        ({"families": []}, "at least one family"),
    ],
)
def test_bad_arguments_are_a_clear_value_error(tmp_path, kwargs, message):
    args = {"n_real": 4, "n_fake": 4, "min_size": 32, "max_size": 40, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path, progress=False, **args)
    assert not list(tmp_path.rglob("*.png")), "nothing is written when the arguments are bad"


def test_an_existing_tree_is_kept_unless_overwrite(tmp_path):
    generate_dataset(tmp_path, 4, 4, min_size=32, max_size=32, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(tmp_path, 4, 4, min_size=32, max_size=32, progress=False)
    generate_dataset(tmp_path, 2, 2, min_size=32, max_size=32, overwrite=True, progress=False)
    assert len(list(tmp_path.rglob("*.png"))) == 4


def test_command_line_reports_bad_arguments_with_status_2(tmp_path):
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--n-real",
                "4",
                "--n-fake",
                "4",
                "--max-size",
                "9999",
                "--no-progress",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--n-real",
                "2",
                "--n-fake",
                "2",
                "--min-size",
                "32",
                "--max-size",
                "32",
                "--no-progress",
                "--manifest",
                str(tmp_path / "m.csv"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m.csv").is_file() and len(list(tmp_path.rglob("*.png"))) == 4
