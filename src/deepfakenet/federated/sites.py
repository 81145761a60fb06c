"""What a site holds, and what it trains on.

A site is a running service's own records: its SQL store (predictions and the feedback people
gave) and its feature store (the 512-d vectors of the images it scored, day-partitioned
Parquet). :func:`labelled_rows` joins the two: a vector for every image a person labelled, for
the model version whose backbone produced the vectors. That join, and nothing else, is what a
site trains on; images never leave it, and in the Flower app (``federated/``) neither do the
vectors. The demo's sites are made by :mod:`deepfakenet.federated.demo`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepfakenet.features import (
    FEATURE_DIM,
    FeatureRow,
    feature_matrix,
    read_features,
    write_features,
)
from deepfakenet.labels import FAKE_LABEL, LABELS, REAL_LABEL
from deepfakenet.store import PredictionRecord, Store, collect_labels, new_id, utcnow

log = logging.getLogger(__name__)

#: File names inside a demo folder (:func:`deepfakenet.federated.demo.prepare_demo`).
SERVER_VAL = "server_val.npz"
POOLED_TEST = "pooled_test.npz"
SITES_FILE = "sites.json"


@dataclass(frozen=True)
class Site:
    """Where one site's records live (what its SuperNode's ``node-config`` points at)."""

    name: str
    store_url: str
    features_dir: str


def labelled_rows(
    site: Site, model_version: str, min_votes: int = 1, tie: str = "skip"
) -> tuple[np.ndarray, np.ndarray]:
    """The site's labelled vectors of ``model_version``: ``(N x 512 float32, N labels 0/1)``.

    Labels follow the project's one rule (:func:`deepfakenet.store.collect_labels`, as
    retraining reads them): per image, each client's latest vote, the majority of them, ties
    skipped; every labelled image counts, used by retraining or not. The vector is the latest
    one ``model_version`` stored for the image (one row per image, however often it was
    scored); rows of other versions are left out: another backbone made them.
    """
    store = Store(site.store_url)  # a site that has recorded nothing yet has empty tables
    try:
        labels, _ = collect_labels(store, min_votes, tie, fresh_only=False)
        scored = store.predictions_frame(model_versions=[model_version])
    finally:
        store.close()
    vectors = read_features(site.features_dir, model_versions=[model_version])
    if labels.empty or vectors.empty:
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros(0, np.int64)
    joined = (
        vectors[["prediction_id", "created_at", "features"]]
        .merge(scored[["id", "sha256"]], left_on="prediction_id", right_on="id")
        .sort_values("created_at", kind="stable")
        .groupby("sha256")
        .tail(1)
        .merge(labels[["sha256", "label"]], on="sha256")
        .sort_values("sha256", kind="stable")
    )
    targets = joined["label"].map({label: i for i, label in enumerate(LABELS)})
    return feature_matrix(joined), targets.to_numpy(dtype=np.int64)


def non_iid_sites(index: pd.DataFrame, n_sites: int) -> pd.Series:
    """The site (0..n-1) of each indexed image: reals by photo source, fakes by family.

    Sources and families are dealt round-robin in name order, so site k sees reals from its
    own sources and fakes from its own generators only: the shift between deployments that
    makes federated training worth more than any site's own.
    """
    sites = pd.Series(0, index=index.index, dtype=int)
    for label in (REAL_LABEL, FAKE_LABEL):
        mask = index["label"] == label
        key = index.loc[mask, "source" if label == REAL_LABEL else "group"].astype(str)
        names = sorted(key.unique())
        slot = {name: i % n_sites for i, name in enumerate(names)}
        sites[mask] = key.map(slot)
    return sites


def write_site(
    site: Site,
    rows: pd.DataFrame,
    features: np.ndarray,
    prob_fake: np.ndarray,
    version: str,
    threshold: float = 0.5,
) -> int:
    """Record ``rows`` at ``site`` as a service would: predictions, vectors, and the feedback.

    Every image gets its true label as feedback (a person confirmed or corrected the verdict).
    Returns the number of images written.
    """
    now = utcnow()
    records, vectors = [], []
    for (_, row), vector, prob in zip(rows.iterrows(), features, prob_fake, strict=True):
        pid = new_id()
        records.append(
            PredictionRecord(
                id=pid,
                created_at=now,
                endpoint="predict",
                model_name="deepfakenet",
                model_version=version,
                prob_fake=float(prob),
                label=FAKE_LABEL if prob >= threshold else REAL_LABEL,
                threshold=threshold,
                sha256=str(row["sha256"]),
                width=int(row["width"]),
                height=int(row["height"]),
                format="PNG",
            )
        )
        vectors.append(FeatureRow(pid, version, now, vector))
    store = Store(site.store_url)
    try:
        store.add_predictions(records)
        for record, (_, row) in zip(records, rows.iterrows(), strict=True):
            store.add_feedback(record.id, str(row["label"]))
    finally:
        store.close()
    if vectors:
        write_features(site.features_dir, vectors)
    return len(records)


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors, targets, sources)`` of a ``server_val.npz`` / ``pooled_test.npz``."""
    with np.load(path, allow_pickle=False) as data:
        return data["features"], data["targets"], data["sources"]
