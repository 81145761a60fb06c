import logging
import shutil

import torch

from deepfakenet.data.datamodule import DeepfakeDataModule


def test_batches_have_the_crop_shape_and_both_labels(tiny_data):
    dm = DeepfakeDataModule(tiny_data, crop_size=32, batch_size=8, num_workers=0)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    labels = torch.cat([b[1] for b in dm.val_dataloader()] + [b[1] for b in dm.test_dataloader()])
    assert set(labels.tolist()) <= {0, 1}
    sizes = {s: len(dm.split_index(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == len(dm.index) and min(sizes.values()) > 0, sizes


def test_a_shortened_validation_pass_still_sees_both_classes(tiny_data):
    # Lightning's limit_val_batches keeps the first batches: a folder-ordered index would make
    # them all real (val AUROC undefined, checkpointing on noise).
    dm = DeepfakeDataModule(tiny_data, crop_size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    _, first_batch = next(iter(dm.val_dataloader()))
    assert set(first_batch.tolist()) == {0, 1}


def test_corrupt_file_in_tree_is_skipped_with_a_warning(tiny_data, tmp_path, caplog):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_data, tree)
    (tree / "fake" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dm = DeepfakeDataModule(tree, crop_size=32, batch_size=64, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "corrupt.png" in caplog.text
    n = sum(len(b[1]) for b in dm.train_dataloader())
    assert n > 0 and not dm.index["relpath"].str.contains("corrupt").any()


def test_excluded_groups_stay_out_of_train_and_val(tiny_data):
    dm = DeepfakeDataModule(
        tiny_data, crop_size=32, num_workers=0, exclude_groups=["fake/pixel_shuffle"]
    )
    dm.setup()
    for split in ("train", "val"):
        assert not (dm.split_index(split)["group"] == "pixel_shuffle").any()
    assert (dm.index["group"] == "pixel_shuffle").any()


def test_training_and_evaluation_crops_can_differ(tiny_data):
    dm = DeepfakeDataModule(tiny_data, crop_size=24, eval_crop_size=32, batch_size=4, num_workers=0)
    dm.setup()
    assert next(iter(dm.train_dataloader()))[0].shape[-2:] == (24, 24)
    assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (32, 32)
    assert next(iter(dm.test_dataloader()))[0].shape[-2:] == (32, 32)
    assert DeepfakeDataModule(tiny_data, crop_size=24).eval_crop_size == 24


def test_excluded_sources_take_their_fakes_with_them(tiny_data):
    dm = DeepfakeDataModule(tiny_data, crop_size=32, num_workers=0, exclude_sources=["sklearn"])
    dm.setup()
    for split in ("train", "val"):
        rows = dm.split_index(split)
        assert not (rows["source"] == "sklearn").any()
        assert not rows["relpath"].str.contains("/china_|/flower_").any()
    test = dm.split_index("test")
    assert (test["source"] == "sklearn").any(), "test keeps the held-out source"
