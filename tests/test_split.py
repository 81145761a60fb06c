import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfakenet.data.split import (
    MANIFEST_NAME,
    assign_split,
    scan_image_tree,
    split_key_digest,
)
from deepfakenet.errors import DatasetError


def _write(path: Path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _tree(root: Path, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        _write(root / "real" / f"r{i}.png", seed=i)
        _write(root / "fake" / "fam" / f"f{i}.png", seed=10_000 + i)


def test_assign_split_depends_on_hash_only_and_matches_fractions():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    splits = [assign_split(h, 0.1, 0.2) for h in hashes]
    assert splits == [assign_split(h, 0.1, 0.2) for h in hashes], "split must be deterministic"
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["test"] - 0.2) < 0.02 and abs(share["val"] - 0.1) < 0.02, share


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (0.9, 0.2)])
def test_assign_split_rejects_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fractions"):
        assign_split("0" * 64, val, test)


def test_adding_files_never_moves_old_files(tmp_path):
    _tree(tmp_path, 30)
    before = scan_image_tree(tmp_path).set_index("relpath")["split"]
    _tree(tmp_path, 30, start=30)  # the feedback loop adds images later
    after = scan_image_tree(tmp_path).set_index("relpath")["split"]
    assert len(after) == 2 * len(before)
    assert (after.loc[before.index] == before).all(), "an existing file changed split"
    # Moving the tree elsewhere keeps the split too: it depends on content, not on paths.
    moved = tmp_path.parent / "moved"
    shutil.copytree(tmp_path, moved)
    assert (scan_image_tree(moved).set_index("relpath")["split"] == after).all()


def test_scan_skips_corrupt_files_and_records_groups(tmp_path, caplog):
    _tree(tmp_path, 6)
    (tmp_path / "real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = tmp_path / "fake" / "fam" / "f0.png"
    (tmp_path / "fake" / "fam" / "truncated.png").write_bytes(good.read_bytes()[:100])
    (tmp_path / "real" / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING):
        index = scan_image_tree(tmp_path)
    assert len(index) == 12
    assert "broken.png" in caplog.text and "truncated.png" in caplog.text
    assert set(index["group"]) == {"", "fam"}
    assert set(index["target"]) == {0, 1}
    assert (index.loc[index["label"] == "fake", "target"] == 1).all()


def test_scan_drops_conflicting_and_duplicate_content(tmp_path):
    _tree(tmp_path, 4)
    shutil.copy(tmp_path / "real" / "r0.png", tmp_path / "fake" / "r0_copy.png")  # conflict
    shutil.copy(tmp_path / "real" / "r1.png", tmp_path / "real" / "r1_copy.png")  # duplicate
    index = scan_image_tree(tmp_path)
    assert not index["relpath"].str.startswith("real/r0").any(), "conflicting bytes kept"
    assert index["sha256"].is_unique
    assert len(index) == 4 + 3


def test_scan_requires_both_classes(tmp_path):
    _write(tmp_path / "real" / "a.png", 0)
    with pytest.raises(DatasetError, match="fake"):
        scan_image_tree(tmp_path)
    (tmp_path / "fake").mkdir()
    with pytest.raises(DatasetError, match="no readable images"):
        scan_image_tree(tmp_path)


def _photo_tree(root: Path, photos: int, crops: int) -> pd.DataFrame:
    """Several real crops and fakes per photo, listed in a manifest as the generator does."""
    rows = []
    for p in range(photos):
        for c in range(crops):
            for label, group in (("real", "src"), ("fake", "fam")):
                rel = f"{label}/{group}/photo{p}_{c:06d}.png"
                _write(root / rel, seed=1000 * p + 10 * c + (label == "fake"))
                rows.append({"path": rel, "label": label, "source": "src", "photo": f"photo{p}"})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / MANIFEST_NAME, index=False)
    return manifest


def test_manifest_splits_by_photo_so_no_photo_is_on_both_sides(tmp_path):
    _photo_tree(tmp_path, photos=40, crops=3)
    index = scan_image_tree(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert (index["photo"] != "").all()
    per_photo = index.groupby("photo")["split"].nunique()
    assert (per_photo == 1).all(), "crops or fakes of one photo landed in different splits"
    assert set(index["split"]) == {"train", "val", "test"}
    # The photo decides: each crop's own content hash would have scattered them.
    by_content = index["sha256"].map(lambda h: assign_split(h, 0.2, 0.2))
    assert (by_content != index["split"]).any()
    assert (
        index["split"]
        == index["photo"].map(lambda p: assign_split(split_key_digest(f"photo:{p}"), 0.2, 0.2))
    ).all()


def test_manifest_paths_are_forgiven_and_a_mismatch_is_logged(tmp_path, caplog):
    manifest = _photo_tree(tmp_path, photos=4, crops=1)
    manifest["path"] = "./" + manifest["path"]
    manifest.loc[0, "path"] = "real/src/not_there.png"
    manifest.to_csv(tmp_path / MANIFEST_NAME, index=False)
    with caplog.at_level(logging.WARNING):
        index = scan_image_tree(tmp_path)
    assert (index["photo"] != "").sum() == len(manifest) - 1
    assert f"lists {len(manifest)} files, {len(manifest) - 1} of them found" in caplog.text


def test_files_the_manifest_does_not_list_keep_their_content_split(tmp_path):
    _photo_tree(tmp_path, photos=10, crops=2)
    before = scan_image_tree(tmp_path).set_index("relpath")["split"]
    # Feedback images arrive later without a manifest row: split by content, old files stay put.
    _write(tmp_path / "real" / "feedback" / "upload.png", seed=99)
    after = scan_image_tree(tmp_path).set_index("relpath")
    assert (after.loc[before.index, "split"] == before).all()
    added = after.loc["real/feedback/upload.png"]
    assert added["photo"] == "" and added["split"] == assign_split(added["sha256"], 0.15, 0.15)


def test_a_manifest_without_a_photo_column_is_a_clear_error(tmp_path):
    _tree(tmp_path, 2)
    pd.DataFrame({"path": ["real/r0.png"]}).to_csv(tmp_path / MANIFEST_NAME, index=False)
    with pytest.raises(DatasetError, match="photo"):
        scan_image_tree(tmp_path)
