"""The demo federation: three non-IID sites made out of one data tree.

:func:`prepare_demo` turns the embedded data set into sites the way three deployments would
differ: each site's users see other photo sources and other generators
(:func:`~deepfakenet.federated.sites.non_iid_sites`). Every image is scored once by the
champion, as the service would have scored it, and labelled with its true class, as if its
user had confirmed or corrected the verdict. The server keeps the validation split's vectors (to
calibrate the federated head) and the test split's (the pooled test set every head is compared
on). Only the demo needs images: a real site already has its records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deepfakenet.data.datamodule import ImageDataset
from deepfakenet.features import FEATURE_DIM
from deepfakenet.federated.sites import (
    POOLED_TEST,
    SERVER_VAL,
    SITES_FILE,
    Site,
    non_iid_sites,
    write_site,
)
from deepfakenet.inference import score_batch
from deepfakenet.labels import FAKE_LABEL, REAL_LABEL
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.preprocessing import build_transform

log = logging.getLogger(__name__)


def embed_rows(
    net: DeepfakeNet, rows: pd.DataFrame, batch_size: int = 64, desc: str = "embedding"
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and calibrated P(fake) of indexed images, as the service would score them.

    The one evaluation transform (a centre crop, no resizing) and the one scoring path
    (:func:`deepfakenet.inference.score_batch`), so these are the vectors and probabilities a
    service running ``net`` would have stored for these images.

    Returns:
        ``(N x 512 float32 vectors, N probabilities)`` in the order of ``rows``.
    """
    net = net.cpu().eval()
    loader = DataLoader(
        ImageDataset(rows, build_transform(net.crop_size, train=False)), batch_size=batch_size
    )
    features, prob = [np.zeros((0, FEATURE_DIM), np.float32)], [np.zeros(0, np.float32)]
    for x, _ in tqdm(loader, desc=desc, leave=False):
        scores = score_batch(net, x)
        features.append(scores.features.numpy())
        prob.append(scores.prob_fake.numpy())
    return np.concatenate(features), np.concatenate(prob)


def prepare_demo(
    net: DeepfakeNet,
    version: str,
    index: pd.DataFrame,
    out_dir: str | Path,
    n_sites: int = 3,
    batch_size: int = 64,
) -> list[Site]:
    """Make ``n_sites`` non-IID sites from the train split, and the server's val/test vectors.

    Args:
        net: The champion (its backbone produced every vector).
        version: The champion's version number (the rows' ``model_version``).
        index: The data tree's index (``split``, ``label``, ``group``, ``source``, ...).
        out_dir: An empty folder: ``site-<k>/`` per site, ``server_val.npz``,
            ``pooled_test.npz``, ``sites.json``.
        n_sites: Number of sites.
        batch_size: Images per forward pass.

    Returns:
        The sites, in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("val", SERVER_VAL), ("test", POOLED_TEST)):
        rows = index[index["split"] == split]
        features, _ = embed_rows(net, rows, batch_size, desc=f"{split} vectors")
        np.savez(
            out / name,
            features=features,
            targets=rows["target"].to_numpy(dtype=np.int64),
            sources=np.asarray(rows["source"].astype(str).tolist(), dtype=str),
            groups=np.asarray(
                (rows["label"] + "/" + rows["group"].astype(str)).tolist(), dtype=str
            ),
        )
    train = index[index["split"] == "train"]
    site_of = non_iid_sites(train, n_sites)
    sites = []
    for k in range(n_sites):
        folder = out / f"site-{k}"
        site = Site(f"site-{k}", f"sqlite:///{folder / 'records.db'}", str(folder / "features"))
        rows = train[site_of == k]
        features, prob = embed_rows(net, rows, batch_size, desc=f"site {k} vectors")
        folder.mkdir(parents=True, exist_ok=True)
        written = write_site(site, rows, features, prob, version, float(net.threshold))
        log.info(
            "%s: %d images (reals from %s; fakes of %s)",
            site.name,
            written,
            sorted(rows.loc[rows["label"] == REAL_LABEL, "source"].unique()),
            sorted(rows.loc[rows["label"] == FAKE_LABEL, "group"].unique()),
        )
        sites.append(site)
    (out / SITES_FILE).write_text(
        json.dumps({"model_version": version, "sites": [asdict(s) for s in sites]}, indent=2)
    )
    return sites
