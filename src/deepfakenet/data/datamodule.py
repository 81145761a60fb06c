"""LightningDataModule over an ImageFolder-style tree (``real/``, ``fake/``), split by photo."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from deepfakenet.data.sources import photo_source
from deepfakenet.data.split import scan_image_tree
from deepfakenet.imaging import DecodeLimits, load_image_file
from deepfakenet.labels import REAL_LABEL
from deepfakenet.preprocessing import AugmentConfig, build_transform

log = logging.getLogger(__name__)


def image_sources(index: pd.DataFrame) -> pd.Series:
    """The real source each indexed image comes from ("" when it cannot be told).

    A file the tree's manifest lists carries its photo id (``<source>/<photo>``), real or fake.
    Otherwise a real's source is its group folder (``real/<source>/...``), and a fake's is read
    from the file name the generator gives it (``<photo>_<index>.png``, see
    :func:`deepfakenet.data.sources.photo_source`). Files from elsewhere (feedback, user data)
    get ``""`` and are never excluded by source.
    """
    photos = index["relpath"].map(lambda rel: PurePosixPath(rel).stem.rsplit("_", 1)[0])
    from_name = photos.map(lambda photo: photo_source(photo) or "")
    guessed = index["group"].where(index["label"] == REAL_LABEL, from_name).astype(str)
    if "photo" not in index.columns:
        return guessed
    listed = index["photo"].astype(str)
    from_manifest = listed.map(lambda photo: photo.split("/", 1)[0] if "/" in photo else "")
    return from_manifest.where(from_manifest != "", guessed)


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images listed in an index frame, decoded by the one safe decoder and transformed."""

    def __init__(
        self,
        index: pd.DataFrame,
        transform: Callable[..., torch.Tensor],
        limits: DecodeLimits | None = None,
    ) -> None:
        self.paths = index["path"].tolist()
        self.targets = index["target"].astype(int).tolist()
        self.transform = transform
        self.limits = limits

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = load_image_file(self.paths[i], self.limits)
        return self.transform(image), self.targets[i]


class DeepfakeDataModule(L.LightningDataModule):
    """Reads ``data_dir/{real,fake}/**``, splits by photo (else content) hash, serves loaders.

    Args:
        data_dir: Root of the tree.
        crop_size: Square training crop side, taken at native resolution (see
            ``preprocessing``).
        eval_crop_size: Centre-crop side for validation and test (``None``: ``crop_size``).
            The network is fully convolutional, so it can be trained on small, cheap crops and
            judge a larger native-resolution region, which holds more evidence; this is also
            the side the registered model is served at (its ``crop_size``).
        batch_size: Batch size of every loader.
        num_workers: Loader worker processes.
        pin_memory: Pin host memory (useful on GPU only).
        persistent_workers: Keep workers alive between epochs (ignored with 0 workers).
        val_fraction: Share of photos (by hash) for validation.
        test_fraction: Share of photos (by hash) for test.
        augment: Training augmentations, applied to both classes.
        exclude_groups: ``label/group`` names (e.g. ``fake/pixel_shuffle``) kept out of train
            and val, for leave-one-out protocols; their test-split files stay in test.
        exclude_sources: Real sources (e.g. ``sklearn``) kept out of train and val together
            with every fake made from their photos (see :func:`image_sources`), so a
            leave-one-source-out model has never seen that source's content in either class.
        max_pixels: Pixel limit for the decoder; images over it are skipped at scan time.
    """

    def __init__(
        self,
        data_dir: str | Path,
        crop_size: int = 64,
        eval_crop_size: int | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        augment: AugmentConfig | None = None,
        exclude_groups: Sequence[str] = (),
        exclude_sources: Sequence[str] = (),
        max_pixels: int = 40_000_000,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.crop_size = crop_size
        self.eval_crop_size = eval_crop_size or crop_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.augment = augment or AugmentConfig()
        self.exclude_groups = set(exclude_groups)
        self.exclude_sources = set(exclude_sources)
        self.limits = DecodeLimits(max_pixels=max_pixels)
        self.index: pd.DataFrame | None = None

    def setup(self, stage: str | None = None) -> None:
        """Scan the tree once; every stage reuses the same index."""
        if self.index is None:
            index = scan_image_tree(
                self.data_dir, self.val_fraction, self.test_fraction, limits=self.limits
            )
            index["source"] = image_sources(index)
            self.index = index

    def split_index(self, split: str) -> pd.DataFrame:
        """The index rows of one split, with excluded groups removed from train and val."""
        if self.index is None:
            self.setup()
        assert self.index is not None  # for type checkers; setup() always sets it
        rows = self.index[self.index["split"] == split]
        if split != "test":
            rows = rows[~self.is_excluded(rows)]
        return rows

    def is_excluded(self, rows: pd.DataFrame) -> pd.Series:
        """True for index rows that ``exclude_groups`` / ``exclude_sources`` keep out of train."""
        keys = rows["label"] + "/" + rows["group"]
        return keys.isin(self.exclude_groups) | rows["source"].isin(self.exclude_sources)

    def _loader(self, split: str, train: bool) -> DataLoader:
        rows = self.split_index(split)
        crop = self.crop_size if train else self.eval_crop_size
        transform = build_transform(crop, train=train, augment=self.augment)
        return DataLoader(
            ImageDataset(rows, transform, self.limits),
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(rows) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Deterministic centre crops of the validation split."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        """Deterministic centre crops of the test split."""
        return self._loader("test", train=False)
