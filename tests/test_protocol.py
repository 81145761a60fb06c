"""The generalisation protocol: folds that never leak, perturbations, cells, the benchmark."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.data.fakes import FAKE_FAMILIES
from deepfakenet.data.sources import BUNDLED_SOURCES, REAL_SOURCES
from deepfakenet.errors import DataLeakError
from deepfakenet.evaluation import cell_metrics, robustness_table
from deepfakenet.models import DeepfakeNet
from deepfakenet.perturbations import Downscale, GaussianBlur, Jpeg
from deepfakenet.protocol import (
    FAMILY_OUT,
    IN_DISTRIBUTION,
    SOURCE_OUT,
    Fold,
    check_no_leak,
    fold_test_rows,
    goal_summary,
    make_folds,
)


def _datamodule(root, fold: Fold) -> DeepfakeDataModule:
    dm = DeepfakeDataModule(
        root,
        crop_size=32,
        num_workers=0,
        val_fraction=0.25,
        test_fraction=0.25,
        exclude_groups=fold.exclude_groups,
        exclude_sources=fold.exclude_sources,
    )
    dm.setup()
    return dm


@pytest.mark.parametrize(
    "fold",
    make_folds(sorted(FAKE_FAMILIES), sorted(BUNDLED_SOURCES), in_distribution=False),
    ids=lambda f: f.name,
)
def test_held_out_family_or_source_never_reaches_train_or_val(tiny_data, fold):
    dm = _datamodule(tiny_data, fold)
    check_no_leak(dm, fold)  # the protocol's own guard passes...
    test = fold_test_rows(dm.index, fold)
    for split in ("train", "val"):
        rows = dm.split_index(split)
        assert len(rows), split
        # ...and, independently: no name, no content of the held-out images in train or val.
        assert not rows["sha256"].isin(test[test["label"] == "fake"]["sha256"]).any()
        if fold.protocol == FAMILY_OUT:
            assert not ((rows["label"] == "fake") & (rows["group"] == fold.held_out)).any()
        else:
            assert not (rows["source"] == fold.held_out).any()
            assert not rows["sha256"].isin(test["sha256"]).any()
            # The fakes made from the held-out photos are kept out as well.
            photos = set(REAL_SOURCES[fold.held_out])
            stems = rows["relpath"].str.rsplit("/", n=1).str[-1].str.rsplit("_", n=1).str[0]
            assert not stems.isin(photos).any()
    # The test rows are exactly the held-out images (plus, for a family, the test reals).
    if fold.protocol == SOURCE_OUT:
        assert (test["source"] == fold.held_out).all() and set(test["label"]) == {"real", "fake"}
    else:
        fakes = test[test["label"] == "fake"]
        assert (fakes["group"] == fold.held_out).all() and len(fakes)
        assert (test[test["label"] == "real"]["split"] == "test").all()


def test_a_leaking_fold_is_refused(tiny_data):
    everything = _datamodule(tiny_data, Fold(IN_DISTRIBUTION))
    for fold in (Fold(FAMILY_OUT, "nearest_conv"), Fold(SOURCE_OUT, "sklearn")):
        with pytest.raises(DataLeakError, match=fold.name):
            check_no_leak(everything, fold)


def test_sources_of_fakes_come_from_their_photo(tiny_data):
    dm = _datamodule(tiny_data, Fold(IN_DISTRIBUTION))
    index = dm.index
    assert set(index["source"]) == set(BUNDLED_SOURCES)  # what tiny_data draws from
    reals = index[index["label"] == "real"]
    assert (reals["source"] == reals["group"]).all()


def _image(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8))


def test_perturbations_change_pixels_as_named():
    img = _image()
    jpeg = np.asarray(Jpeg(50)(img), dtype=int)
    assert jpeg.shape == np.asarray(img).shape and np.abs(jpeg - np.asarray(img)).mean() > 1
    assert Downscale(0.5)(img).size == (36, 32)
    blurred = np.asarray(GaussianBlur(1.0)(img), dtype=float)
    assert blurred.std() < np.asarray(img, dtype=float).std() / 2
    for bad in (lambda: Jpeg(0), lambda: Downscale(1.5), lambda: GaussianBlur(0.0)):
        with pytest.raises(ValueError):
            bad()


def test_cells_use_the_stored_threshold():
    net = DeepfakeNet(crop_size=32)
    prob = torch.tensor([0.1, 0.35, 0.6, 0.2, 0.5, 0.9])
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    net.threshold.fill_(0.3)
    low = cell_metrics(net, prob, targets)
    net.threshold.fill_(0.55)
    high = cell_metrics(net, prob, targets)
    assert (low["fpr"], low["tpr"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (high["fpr"], high["tpr"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert low["auroc"] == high["auroc"], "ranking metrics do not depend on the threshold"
    only_reals = cell_metrics(net, prob[:3], targets[:3])
    assert math.isnan(only_reals["auroc"]) and only_reals["fpr"] == pytest.approx(1 / 3)


def test_robustness_table_scores_every_condition(tiny_data):
    dm = _datamodule(tiny_data, Fold(IN_DISTRIBUTION))
    net = DeepfakeNet(crop_size=32).eval()
    perturbations = {"jpeg75": Jpeg(75), "blur1": GaussianBlur(1.0)}
    table = robustness_table(net, dm.split_index("test"), perturbations, full_image=True)
    assert list(table["condition"]) == ["native", "jpeg75", "blur1", "full_image"]
    n_test = len(dm.split_index("test"))
    assert ((table["n_real"] + table["n_fake"]) == n_test).all()
    assert table[["auroc", "ap", "acc", "ece", "fpr", "tpr"]].notna().all().all()


def test_goal_summary_reports_the_worst_case():
    table = pd.DataFrame(
        [
            (IN_DISTRIBUTION, "all", "native", 0.99, 0.02, 0.03),
            (IN_DISTRIBUTION, "all", "jpeg75", 0.90, 0.10, 0.05),
            (FAMILY_OUT, "a", "native", 0.95, 0.05, 0.0),
            (FAMILY_OUT, "b", "native", 0.80, 0.05, 0.0),
            (SOURCE_OUT, "s", "native", math.nan, 0.04, 0.0),
            (SOURCE_OUT, "s", "downscale0.5", math.nan, 0.30, 0.0),
            # A learned decoder is judged by its own goal, and demosaicing by its own.
            (FAMILY_OUT, "ae_transposed", "native", 0.70, 0.05, 0.0),
            (SOURCE_OUT, "s", "demosaic", math.nan, 0.50, 0.0),
            (IN_DISTRIBUTION, "all", "demosaic", 0.98, 0.08, 0.0),
        ],
        columns=["protocol", "held_out", "condition", "auroc", "fpr", "ece"],
    )
    goals = {
        "family_auroc_min": 0.9,
        "learned_family_auroc_min": 0.9,
        "demosaic_fpr_max": 0.1,
        "source_fpr_max": 0.1,
        "jpeg75_auroc_drop_max": 0.05,
        "ece_max": 0.05,
    }
    summary = goal_summary(table, goals).set_index("goal")
    assert (
        summary.loc["family_auroc_min", "where"] == "b/native"
        and not summary.loc["family_auroc_min", "met"]
    )
    assert summary.loc["source_fpr_max", "where"] == "s/downscale0.5"
    assert summary.loc["learned_family_auroc_min", "where"] == "ae_transposed/native"
    assert summary.loc["demosaic_fpr_max", "value"] == pytest.approx(0.5)
    assert summary.loc["jpeg75_auroc_drop_max", "value"] == pytest.approx(0.09)
    assert bool(summary.loc["ece_max", "met"])


@pytest.mark.slow
def test_generalisation_benchmark_quick_runs_end_to_end(tmp_path, monkeypatch):
    from benchmarks.generalisation import main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = ["protocol.families=[pixel_shuffle]", "protocol.sources=[sklearn]"]
    assert main(["--quick", "--root", str(tmp_path), "--tracking-uri", uri, *overrides]) == 0

    table = pd.read_csv(tmp_path / "reports" / "generalisation-quick" / "generalisation.csv")
    cells = set(zip(table["protocol"], table["held_out"], table["condition"], strict=True))
    assert (FAMILY_OUT, "pixel_shuffle", "native") in cells
    assert {(SOURCE_OUT, "sklearn", "native"), (SOURCE_OUT, "sklearn", "downscale0.5")} <= cells
    for condition in (
        "native",
        "jpeg95",
        "jpeg75",
        "jpeg50",
        "downscale0.5",
        "blur1",
        "full_image",
    ):
        assert (IN_DISTRIBUTION, "all", condition) in cells
    assert table[["acc", "ece"]].notna().all().all()

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("deepfakenet-generalisation")
    runs = client.search_runs([experiment.experiment_id], "tags.protocol = 'generalisation'")
    assert len(runs) == 1
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "generalisation")}
    assert {"generalisation/generalisation.md", "generalisation/generalisation.csv"} <= artifacts
    assert len([k for k in runs[0].data.tags if k.startswith("fold.")]) == 3
