"""The retraining loop's steps in isolation: label collection, data writing, the promotion rule."""

import filelock
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from deepfakenet import registry
from deepfakenet.errors import RegistryError
from deepfakenet.retrain import (
    RetrainLockedError,
    collect_labels,
    decide,
    retrain,
    write_feedback_images,
)
from deepfakenet.store import ImageArchive, Store
from tests.conftest import prediction_record


def _predict(store: Store, sha: str) -> str:
    rec = prediction_record(sha256=sha, prob_fake=0.3, label="real", width=8, height=8)
    store.add_predictions([rec])
    return rec.id


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/store.db")
    yield store
    store.close()


def test_majority_wins_ties_are_skipped_or_latest(store):
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    for sha, votes in ((a, ["fake", "fake", "real"]), (b, ["real", "fake"]), (c, ["real"])):
        for label in votes:
            store.add_feedback(_predict(store, sha), label)  # same image scored several times
    labels, ties = collect_labels(store)
    assert ties == 1
    assert labels.set_index("sha256")["label"].to_dict() == {a: "fake", c: "real"}
    assert labels.set_index("sha256")["votes"].to_dict() == {a: 3, c: 1}
    latest, ties = collect_labels(store, tie="latest")
    assert ties == 0 and latest.set_index("sha256").loc[b, "label"] == "fake"
    only_multi, _ = collect_labels(store, min_votes=2)
    assert set(only_multi["sha256"]) == {a}

    used = [i for ids in labels["feedback_ids"] for i in ids]
    store.mark_feedback_used(used, "test")
    remaining, _ = collect_labels(store, tie="latest")
    assert set(remaining["sha256"]) == {b}, "used feedback is not counted again"


def test_a_late_vote_does_not_overturn_the_majority(store):
    sha = "9" * 64
    old = [store.add_feedback(_predict(store, sha), "fake") for _ in range(3)]
    store.mark_feedback_used(old, "earlier run")
    late = store.add_feedback(_predict(store, sha), "real")
    labels, _ = collect_labels(store)
    row = labels.set_index("sha256").loc[sha]
    assert row["label"] == "fake" and row["votes"] == 4
    assert row["feedback_ids"] == [late], "only the unused vote is consumed"


def test_feedback_images_are_written_idempotently_and_relabelled(tmp_path):
    archive = ImageArchive(tmp_path / "images")
    shas = ["d" * 64, "e" * 64, "f" * 64]
    for sha in shas[:2]:
        archive.put(sha, Image.new("RGB", (8, 8), "blue"))
    data = tmp_path / "data"
    labels = pd.DataFrame({"sha256": shas, "label": ["fake", "real", "real"]})
    written, missing = write_feedback_images(labels, archive, data, "feedback")
    assert written == shas[:2] and missing == 1
    assert (data / "fake" / "feedback" / f"{shas[0]}.png").is_file()
    again, _ = write_feedback_images(labels, archive, data, "feedback")
    assert again == written and len(list(data.rglob("*.png"))) == 2
    flipped = pd.DataFrame({"sha256": [shas[0]], "label": ["real"]})
    write_feedback_images(flipped, archive, data, "feedback")
    assert not (data / "fake" / "feedback" / f"{shas[0]}.png").exists()
    assert (data / "real" / "feedback" / f"{shas[0]}.png").is_file()


RULE = OmegaConf.create({"metric": "auroc", "max_drop": 0.01, "feedback_must_improve": True})


@pytest.mark.parametrize(
    ("champion", "challenger", "promote"),
    [
        ({"auroc": 0.90, "feedback_error": 0.5}, {"auroc": 0.895, "feedback_error": 0.2}, True),
        ({"auroc": 0.90, "feedback_error": 0.5}, {"auroc": 0.85, "feedback_error": 0.0}, False),
        ({"auroc": 0.90, "feedback_error": 0.2}, {"auroc": 0.95, "feedback_error": 0.2}, False),
        ({"auroc": 0.90, "feedback_error": None}, {"auroc": 0.91, "feedback_error": None}, True),
        ({"auroc": 0.90, "feedback_error": None}, {"auroc": 0.80, "feedback_error": None}, False),
    ],
)
def test_promotion_rule(champion, challenger, promote):
    decision, reasons = decide(champion, challenger, RULE)
    assert decision is promote
    assert len(reasons) == 2 and any("auroc" in r for r in reasons)


def test_feedback_criterion_can_be_switched_off():
    rule = OmegaConf.merge(RULE, {"feedback_must_improve": False})
    decision, _ = decide(
        {"auroc": 0.9, "feedback_error": 0.1}, {"auroc": 0.9, "feedback_error": 0.3}, rule
    )
    assert decision is True


def test_a_second_run_exits_while_the_lock_is_held(tmp_path):
    cfg = OmegaConf.create({"lock_file": str(tmp_path / "retrain.lock")})
    with filelock.FileLock(cfg.lock_file), pytest.raises(RetrainLockedError, match="another"):
        retrain(cfg, OmegaConf.create(), OmegaConf.create())


def test_promote_and_rollback_move_the_aliases(tmp_path):
    import mlflow
    import torch

    from deepfakenet.models import DeepfakeNet

    client = registry.use(
        registry.RegistryConfig(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "a"))
    )
    mlflow.set_experiment("aliases")
    for _ in range(2):
        with mlflow.start_run():
            torch.manual_seed(0)
            registry.log_and_register(DeepfakeNet(crop_size=32), "deepfakenet")
    with pytest.raises(RegistryError, match="rollback needs"):
        registry.rollback(client, "deepfakenet")
    assert registry.promote(client, "deepfakenet", 1) is None
    assert registry.promote(client, "deepfakenet", 2) == "1"
    champion = registry.version_for_alias(client, "deepfakenet", registry.CHAMPION)
    previous = registry.version_for_alias(client, "deepfakenet", registry.PREVIOUS)
    assert (str(champion.version), str(previous.version)) == ("2", "1")
    assert registry.rollback(client, "deepfakenet") == ("1", "2")
    assert str(registry.version_for_alias(client, "deepfakenet", registry.CHAMPION).version) == "1"
    frame = registry.versions_frame(client, "deepfakenet")
    assert frame.set_index("version")["aliases"].to_dict() == {2: "previous", 1: "champion"}
