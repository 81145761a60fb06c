"""The retraining loop's steps in isolation: label collection, data writing, the promotion rule,
failing closed on registry errors and bad config, and the job's MLflow run when a step fails."""

import json
import math
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE
from omegaconf import OmegaConf, open_dict
from PIL import Image

from deepfakenet import registry
from deepfakenet.errors import ConfigError, RegistryError
from deepfakenet.retrain import (
    FeedbackComparison,
    RetrainLockedError,
    collect_labels,
    decide,
    mcnemar_exact_p,
    paired_feedback,
    retrain,
    split_metrics,
    write_feedback_images,
)
from deepfakenet.store import ImageArchive, Store
from tests.conftest import compose_config, prediction_record


def _predict(store: Store, sha: str, client_key: str | None = None) -> str:
    rec = prediction_record(
        sha256=sha, prob_fake=0.3, label="real", width=8, height=8, client_key=client_key
    )
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


def test_one_client_re_uploading_the_same_image_counts_once(store):
    sha, stuffer = "5" * 64, "s" * 64
    for _ in range(5):  # one client uploads the same bytes five times and votes each time
        store.add_feedback(_predict(store, sha, client_key=stuffer), "real")
    for honest in ("a" * 64, "b" * 64):
        store.add_feedback(_predict(store, sha, client_key=honest), "fake")
    labels, _ = collect_labels(store)
    row = labels.set_index("sha256").loc[sha]
    assert row["label"] == "fake" and row["votes"] == 3
    assert len(row["feedback_ids"]) == 7, "every vote is consumed, the superseded ones too"
    assert collect_labels(store, min_votes=4)[0].empty, "min_votes counts clients"


def test_a_clients_latest_vote_counts(store):
    sha, client = "6" * 64, "c" * 64
    for label in ("real", "real", "fake"):  # the same client changes its mind on re-uploads
        store.add_feedback(_predict(store, sha, client_key=client), label)
    store.add_feedback(_predict(store, sha), "real")  # an older prediction, no client key
    labels, ties = collect_labels(store)
    assert labels.empty and ties == 1, "fake (the client's latest) vs real: a tie"
    latest, _ = collect_labels(store, tie="latest")
    assert latest.set_index("sha256").loc[sha, "label"] == "real"


def test_a_changed_vote_on_a_used_prediction_is_seen_again(store):
    sha = "7" * 64
    pid = _predict(store, sha)
    first = store.add_feedback(pid, "fake")
    store.mark_feedback_used([first], "run 1")
    assert collect_labels(store)[0].empty
    assert store.add_feedback(pid, "real") == first, "the same vote, replaced"
    labels, _ = collect_labels(store)
    assert labels.set_index("sha256").loc[sha, "label"] == "real"
    assert labels.iloc[0]["feedback_ids"] == [first]


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


RULE = OmegaConf.create(
    {
        "metric": "auroc",
        "max_drop": 0.01,
        "min_gain": 0.0,
        "require_improvement": True,
        "feedback": {"min_items": 10, "alpha": 0.05},
    }
)


def _metrics(auroc: float | None, fixed: float | None = None) -> dict:
    fixed = auroc if fixed is None else fixed
    return {"auroc": auroc, "fixed_auroc": fixed, "fixed_n_real": 45.0, "fixed_n_fake": 43.0}


def _feedback(items: int, champion_only: int, challenger_only: int, shared: int = 0):
    """Per-item mistakes of both models on ``items`` held-out feedback items, paired."""
    champion = [1] * champion_only + [0] * challenger_only + [1] * shared
    challenger = [0] * champion_only + [1] * challenger_only + [1] * shared
    pad = [0] * (items - len(champion))
    return paired_feedback(champion + pad, challenger + pad)


def test_the_issue_scenario_promotes():
    """Issue 15: test AUROC 0.991 vs 0.964, both wrong on the same 1 of 12 feedback items."""
    feedback = _feedback(12, 0, 0, shared=1)
    assert (feedback.items, feedback.champion_errors, feedback.challenger_errors) == (12, 1, 1)
    promote, reasons = decide(_metrics(0.964), _metrics(0.991), feedback, RULE)
    assert promote is True, reasons
    assert any("a tie: no evidence" in r for r in reasons), reasons
    assert reasons[-1].startswith("decision: promote") and "fixed test split" in reasons[-1]
    assert "45 real, 43 fake" in reasons[0], "the reason says what the split rests on"


@pytest.mark.parametrize(
    ("champion", "challenger", "feedback", "promote", "why"),
    [
        # a tie on the feedback items and an equal test split: nothing shows an improvement
        (0.95, 0.95, (20, 2, 2), False, "better on neither"),
        # too few items: a clean sweep of 5 is no evidence ...
        (0.95, 0.95, (5, 5, 0), False, "fewer than min_items"),
        # ... and neither is a loss on too few items: the better test split promotes
        (0.95, 0.97, (5, 0, 5), True, "fewer than min_items"),
        # clearly better on the feedback items alone (8 vs 0 discordant: p = 2/2**8)
        (0.95, 0.95, (30, 8, 0), True, "held-out feedback items: BETTER"),
        # clearly worse on them, although better on the test split
        (0.95, 0.99, (30, 0, 8), False, "held-out feedback items: WORSE"),
        # not significant either way (5 vs 0 discordant: p = 0.0625)
        (0.95, 0.95, (30, 5, 0), False, "not significant"),
        (0.95, 0.97, (30, 0, 5), True, "not significant"),
        # worse on the fixed split beyond max_drop: kept whatever the feedback says
        (0.95, 0.93, (30, 10, 0), False, "fixed test split (original images) (45 real, 43 fake)"),
        # within max_drop on the split and better on feedback
        (0.95, 0.945, (30, 10, 0), True, "BETTER"),
        # no feedback items at all: the test split decides
        (0.95, 0.96, None, True, "none in the test split"),
        (0.95, 0.95, None, False, "better on neither"),
    ],
)
def test_promotion_rule(champion, challenger, feedback, promote, why):
    comparison = _feedback(*feedback) if feedback else None
    decision, reasons = decide(_metrics(champion), _metrics(challenger), comparison, RULE)
    assert decision is promote, reasons
    assert any(why in r for r in reasons), reasons
    assert len(reasons) == 4 and reasons[-1].startswith("decision:")


def test_the_original_test_split_gates_even_when_the_whole_split_looks_better():
    # Feedback images in the test split lift the whole-split AUROC; the original images drop.
    champion, challenger = _metrics(0.95, fixed=0.95), _metrics(0.99, fixed=0.90)
    decision, reasons = decide(champion, challenger, _feedback(30, 10, 0), RULE)
    assert decision is False
    assert "WORSE" in reasons[0] and "fixed_auroc 0.9000" in reasons[0]
    # ... and the whole split gates too.
    decision, reasons = decide(_metrics(0.95, 0.95), _metrics(0.90, 0.96), None, RULE)
    assert decision is False and "WORSE" in reasons[1]


@pytest.mark.parametrize(
    "broken",
    [
        {"fixed_auroc": math.nan},
        {"fixed_auroc": None},
        {"auroc": math.nan},
        {"auroc": math.inf},
    ],
)
@pytest.mark.parametrize("role", ["champion", "challenger"])
def test_nan_or_missing_metrics_never_promote(broken, role):
    rule = OmegaConf.merge(RULE, {"require_improvement": False})
    metrics = {"champion": _metrics(0.90), "challenger": _metrics(0.99)}
    metrics[role] |= broken
    decision, reasons = decide(
        metrics["champion"], metrics["challenger"], _feedback(30, 10, 0), rule
    )
    assert decision is False, reasons
    assert any("missing or NaN" in r for r in reasons)


def test_a_missing_metric_key_never_promotes():
    challenger = _metrics(0.99)
    del challenger["fixed_auroc"]
    decision, _ = decide(_metrics(0.90), challenger, None, RULE)
    assert decision is False


def test_require_improvement_can_be_switched_off():
    rule = OmegaConf.merge(RULE, {"require_improvement": False})
    decision, reasons = decide(_metrics(0.95), _metrics(0.945), _feedback(12, 1, 1), rule)
    assert decision is True and "require_improvement=false" in reasons[-1]
    worse, _ = decide(_metrics(0.95), _metrics(0.90), None, rule)
    assert worse is False, "switched off, it still refuses a worse challenger"


@pytest.mark.parametrize(
    ("gain", "loss", "p"),
    [(0, 0, 1.0), (3, 3, 1.0), (5, 0, 0.0625), (0, 6, 0.03125), (8, 2, 2 * 56 / 1024)],
)
def test_exact_mcnemar_p_value(gain, loss, p):
    assert mcnemar_exact_p(gain, loss) == pytest.approx(p)


def test_pairing_leaves_out_items_a_model_could_not_score():
    champion = [1, 0, 1, math.nan, 0]
    challenger = [0, 0, 1, 0, math.nan]
    comparison = paired_feedback(champion, challenger)
    assert comparison == FeedbackComparison(
        items=3,
        unscored=2,
        champion_errors=2,
        challenger_errors=1,
        champion_only_wrong=1,
        challenger_only_wrong=0,
        p_value=1.0,
    )
    with pytest.raises(ValueError, match="different items"):
        paired_feedback([0, 1], [0])


def test_split_metrics_separate_the_fixed_split_and_the_feedback_items():
    prob = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    targets = torch.tensor([1, 0, 1, 0, 0, 1])
    is_feedback = np.array([False, False, False, False, True, True])
    metrics, wrong = split_metrics(prob, targets, 0.5, is_feedback)
    assert metrics["fixed_auroc"] == pytest.approx(1.0) and metrics["auroc"] < 1.0
    assert (metrics["n_real"], metrics["n_fake"]) == (3, 3)
    assert (metrics["fixed_n_real"], metrics["fixed_n_fake"]) == (2, 2)
    assert metrics["feedback_items"] == 2 and metrics["feedback_error"] == 1.0
    assert wrong.tolist() == [1.0, 1.0]
    # One class only (or no image): AUROC means nothing, so it is None, never torchmetrics' 0.
    one_class, _ = split_metrics(prob[:3], torch.tensor([1, 1, 1]), 0.5, np.zeros(3, bool))
    assert one_class["auroc"] is None and one_class["fixed_auroc"] is None
    empty, _ = split_metrics(prob[:2], targets[:2], 0.5, np.ones(2, bool))
    assert empty["fixed_auroc"] is None and empty["fixed_n_real"] == 0
    # A broken model's NaN scores: no metric, and its feedback items count as unscored.
    nan = torch.tensor([0.9, math.nan, 0.8, 0.2, math.nan, 0.3])
    broken, wrong = split_metrics(nan, targets, 0.5, is_feedback)
    assert broken["fixed_auroc"] is None and broken["auroc"] is None
    assert math.isnan(wrong[0]) and wrong[1] == 1.0


def _retrain_cfg(tmp_path, *overrides: str):
    """``conf/retrain.yaml`` composed with every path (and the store) inside ``tmp_path``."""
    cfg = compose_config(
        "retrain.yaml",
        [
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/out",
            f"registry.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"registry.artifact_location={tmp_path}/artifacts",
            f"store.home={tmp_path}/var",
            f"report_dir={tmp_path}/report",
            *overrides,
        ],
    )
    GlobalHydra.instance().clear()
    return cfg


def test_a_second_run_exits_while_the_lock_is_held(tmp_path):
    cfg = _retrain_cfg(tmp_path)
    with filelock.FileLock(cfg.lock_file), pytest.raises(RetrainLockedError, match="another"):
        retrain(cfg, OmegaConf.create())


def test_a_typo_in_the_promotion_rule_is_refused(tmp_path):
    cfg = _retrain_cfg(tmp_path)
    with open_dict(cfg):
        cfg.promotion.max_dorp = 0.5  # as if written in conf/retrain.yaml
    with pytest.raises(ConfigError, match=r"unknown key 'promotion.max_dorp'.*max_drop"):
        retrain(cfg, OmegaConf.create())
    assert not (tmp_path / "report").exists(), "refused before doing anything"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("promotion.max_drop=-0.1", "max_drop"),
        ("promotion.feedback.alpha=1.5", "alpha"),
        ("promotion.metric=ece", "metric"),
        ("collect.tie=coin", "tie"),
        ("promotion.require_improvement=maybe", "require_improvement"),
        ("store.image_retention_days=soon", "image_retention_days"),
        ("data.feedback_folder=a/b", "feedback_folder"),
    ],
)
def test_values_out_of_range_are_refused(tmp_path, override, match):
    cfg = _retrain_cfg(tmp_path, override)
    with pytest.raises(ConfigError, match=match):
        retrain(cfg, OmegaConf.create())


def test_promote_and_rollback_move_the_aliases(tmp_path):
    import mlflow
    import torch

    from deepfakenet.models import DeepfakeNet

    client = registry.use(
        registry.RegistryConfig(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "a"))
    )
    experiment = registry.experiment_id(client, "aliases", str(tmp_path / "a"))
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
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


# ------------------------------------------------------------------ failing closed on the registry


def _rest_error(code: str, message: str) -> RestException:
    """What the client raises for a tracking server's JSON error (as `mlflow server` 3.17 sends)."""
    return RestException({"error_code": code, "message": message})


class _Registry:
    """A registry client whose lookups fail as told (a stand-in for a tracking server)."""

    def __init__(self, error: Exception) -> None:
        self.error, self.moved = error, []

    def get_model_version_by_alias(self, name, alias):
        raise self.error

    def get_model_version(self, name, version):
        raise self.error

    def set_registered_model_alias(self, name, alias, version):
        self.moved.append((alias, str(version)))


OUTAGES = {
    "retries exhausted": MlflowException(
        "API request to http://mlflow:5000/api/2.0/mlflow/registered-models/alias failed with "
        "exception HTTPConnectionPool(host='mlflow', port=5000): Max retries exceeded",
        error_code=INTERNAL_ERROR,
    ),
    "503": MlflowException("the server is restarting", error_code=TEMPORARILY_UNAVAILABLE),
    "500 json": _rest_error("INTERNAL_ERROR", "(sqlite3.OperationalError) database is locked"),
    "bad parameter": _rest_error("INVALID_PARAMETER_VALUE", "Invalid alias name: 'champ!on'"),
    "forbidden": _rest_error("PERMISSION_DENIED", "User does not have permission"),
}
NOT_FOUND = {
    # Both verified against the SQL store and a real `mlflow server` (REST) in MLflow 3.17.
    "no such model": _rest_error(
        "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=deepfakenet not found"
    ),
    "no such alias": _rest_error(
        "INVALID_PARAMETER_VALUE", "Registered model alias champion not found."
    ),
}


@pytest.mark.parametrize("error", OUTAGES.values(), ids=OUTAGES.keys())
def test_a_registry_outage_is_never_read_as_no_champion(error):
    client = _Registry(error)
    for call in (
        lambda: registry.version_for_alias(client, "deepfakenet", "champion"),
        lambda: registry.resolve_version(client, "deepfakenet", "champion"),
        lambda: registry.resolve_version(client, "deepfakenet", "3"),
        lambda: registry.promote_if_no_champion(client, "deepfakenet", "3"),
        lambda: registry.promote(client, "deepfakenet", "3"),
        lambda: registry.rollback(client, "deepfakenet"),
    ):
        with pytest.raises(MlflowException) as caught:
            call()
        assert caught.value is error, "the registry's own error, not a 'not found'"
    assert client.moved == [], "nothing was crowned, previous was not skipped"


@pytest.mark.parametrize("error", NOT_FOUND.values(), ids=NOT_FOUND.keys())
def test_only_not_found_means_no_champion(error):
    client = _Registry(error)
    assert registry.is_not_found(error)
    assert registry.version_for_alias(client, "deepfakenet", "champion") is None
    with pytest.raises(RegistryError, match="no model models:/deepfakenet@champion"):
        registry.resolve_version(client, "deepfakenet", "champion")
    assert registry.promote_if_no_champion(client, "deepfakenet", "1") is True
    assert client.moved == [("champion", "1")]


def test_not_found_codes_match_what_the_sql_store_raises(tmp_path):
    client = registry.use(registry.RegistryConfig(f"sqlite:///{tmp_path}/m.db"))
    with pytest.raises(MlflowException) as no_model:
        client.get_model_version_by_alias("deepfakenet", "champion")
    client.create_registered_model("deepfakenet")
    with pytest.raises(MlflowException) as no_alias:
        client.get_model_version_by_alias("deepfakenet", "champion")
    assert no_model.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert no_alias.value.error_code == "INVALID_PARAMETER_VALUE"  # not RESOURCE_DOES_NOT_EXIST
    assert registry.is_not_found(no_model.value) and registry.is_not_found(no_alias.value)
    assert registry.versions_frame(client, "other").empty


# ------------------------------------------------------------------ the job's run on failure


@pytest.fixture
def loop(tmp_path, monkeypatch):
    """A retraining setup without training: v1 champion, v2 the "challenger", two labels."""
    import mlflow

    from deepfakenet.models import DeepfakeNet

    cfg = _retrain_cfg(
        tmp_path,
        "collect.min_new_labels=1",
        "data.dvc_push=false",
        "data.git_commit=false",
        "notify.service_url=null",
        f"store.url=sqlite:///{tmp_path}/var/store.db",
        f"store.image_dir={tmp_path}/var/images",
    )
    client = registry.use(registry.registry_config(cfg))
    experiment = registry.experiment_id(client, "deepfakenet", str(tmp_path / "artifacts"))
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
            registry.log_and_register(DeepfakeNet(crop_size=32), "deepfakenet")
    mlflow.end_run()
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, 1)

    store, archive = Store(cfg.store.url), ImageArchive(cfg.store.image_dir)
    for i, label in enumerate(("fake", "real")):
        sha = f"{i + 1}" * 64
        archive.put(sha, Image.new("RGB", (8, 8), "red"))
        store.add_feedback(_predict(store, sha), label)
    store.close()

    def fake_train_and_compare(cfg, settings, train_cfg, client, champion, report):
        report.challenger_version, report.status = "2", "promoted"
        report.reasons = ["decision: promote (test stub)"]

    monkeypatch.setattr("deepfakenet.retrain.version_data", lambda *args, **kwargs: "v-test")
    monkeypatch.setattr("deepfakenet.retrain._train_and_compare", fake_train_and_compare)
    return cfg, client


def _job_run_status(client) -> str:
    runs = registry.retrain_runs_frame(client, "deepfakenet")
    assert len(runs) == 1
    return str(runs.iloc[0]["status"])


def _champion(client) -> str:
    return str(registry.version_for_alias(client, "deepfakenet", registry.CHAMPION).version)


def test_a_successful_run_promotes_and_finishes_its_run(loop):
    cfg, client = loop
    report = retrain(cfg, OmegaConf.create())
    assert report.status == "promoted" and _champion(client) == "2"
    assert _job_run_status(client) == "FINISHED"
    assert Store(cfg.store.url).feedback_frame(unused_only=True).empty


def test_marking_feedback_fails_the_run_and_moves_nothing(loop, monkeypatch):
    cfg, client = loop

    def broken(*args, **kwargs):
        raise RuntimeError("the store's disk is full")

    monkeypatch.setattr(Store, "mark_feedback_used", broken)
    with pytest.raises(RuntimeError, match="disk is full"):
        retrain(cfg, OmegaConf.create())
    assert _job_run_status(client) == "FAILED", "never left RUNNING"
    assert _champion(client) == "1", "the alias moves last, after the feedback is marked"
    report = json.loads((Path(cfg.report_dir) / "report.json").read_text())
    assert report["status"] == "failed" and "disk is full" in report["reasons"][-1]


def test_a_registry_outage_at_promotion_fails_the_run(loop, monkeypatch):
    cfg, client = loop
    outage = MlflowException("503 from the tracking server", error_code=TEMPORARILY_UNAVAILABLE)

    def unavailable(*args, **kwargs):
        raise outage

    monkeypatch.setattr(registry, "promote", unavailable)
    with pytest.raises(MlflowException):
        retrain(cfg, OmegaConf.create())
    assert _job_run_status(client) == "FAILED"
    assert _champion(client) == "1"
    runs = registry.retrain_runs_frame(client, "deepfakenet")
    assert runs.iloc[0]["decision"] == "failed", "the history never shows a promotion that failed"


def test_once_the_alias_moved_the_job_is_done_whatever_follows(loop, monkeypatch):
    """Ending the run after a promotion is best effort: exit 1 would claim nothing moved."""
    cfg, client = loop
    real = MlflowClient.set_terminated

    def flaky(self, run_id, status=None, end_time=None):
        if status == "FINISHED":
            raise MlflowException("503", error_code=TEMPORARILY_UNAVAILABLE)
        return real(self, run_id, status=status, end_time=end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", flaky)
    report = retrain(cfg, OmegaConf.create())
    assert report.status == "promoted" and report.promoted_at
    assert _champion(client) == "2"


def test_a_registry_outage_before_the_run_changes_nothing(loop, monkeypatch):
    cfg, client = loop

    def unavailable(self, name, alias):
        raise MlflowException("503 from the tracking server", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", unavailable)
    with pytest.raises(MlflowException, match="503"):
        retrain(cfg, OmegaConf.create())
    assert registry.retrain_runs_frame(client, "deepfakenet").empty, "no job run was started"
    assert len(Store(cfg.store.url).feedback_frame(unused_only=True)) == 2
    assert not list(Path(cfg.paths.data_dir).glob("*/feedback/*.png")), "no data was written"
