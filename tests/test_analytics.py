"""The admin dashboard's numbers (deepfakenet.analytics) on frames read back from a real store.

The frames come from ``Store.predictions_frame`` / ``Store.feedback_frame`` of a SQLite store
filled in the test, so the functions are tested on exactly the shapes and dtypes the page gets.
Expected values are worked out by hand in each test.
"""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from deepfakenet import analytics
from deepfakenet.store import PredictionRecord, Store, new_id, utcnow

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/store.db")
    yield store
    store.close()


def predict(store: Store, prob_fake: float, threshold: float = 0.5, **overrides) -> str:
    values = dict(
        id=new_id(), created_at=utcnow(), endpoint="predict", model_name="deepfakenet",
        model_version="1", prob_fake=prob_fake, label="fake" if prob_fake >= threshold else "real",
        threshold=threshold, sha256="ab" * 32, width=128, height=96, format="PNG",
    )  # fmt: skip
    values.update(overrides)
    store.add_predictions([PredictionRecord(**values)])
    return values["id"]


def test_one_verdict_per_prediction_the_latest_counts(store):
    a = predict(store, 0.9)  # model: fake
    b = predict(store, 0.2)  # model: real
    c = predict(store, 0.7)  # model: fake
    predict(store, 0.4)  # never judged
    store.add_feedback(a, "fake")  # agrees
    store.add_feedback(b, "real")  # agrees ...
    store.add_feedback(b, "fake")  # ... then corrected: the correction counts
    store.add_feedback(c, "real")  # corrects
    feedback = store.feedback_frame()

    verdicts = analytics.latest_verdicts(feedback)
    assert sorted(verdicts["prediction_id"]) == sorted([a, b, c])
    assert verdicts.set_index("prediction_id").loc[b, "human_label"] == "fake"

    agree = analytics.agreement(feedback)
    assert (agree.judged, agree.agreed, agree.disagreed) == (3, 1, 2)
    assert agree.rate == pytest.approx(1 / 3)

    matrix = analytics.confusion_matrix(feedback)
    assert list(matrix.index) == ["real", "fake"] and list(matrix.columns) == ["real", "fake"]
    # rows = model, columns = people: b is (real, fake); a is (fake, fake); c is (fake, real)
    assert matrix.to_numpy().tolist() == [[0, 1], [1, 1]]
    assert (matrix.index.name, matrix.columns.name) == ("model label", "human label")


def test_no_feedback_means_no_claim(store):
    predict(store, 0.9)
    feedback = store.feedback_frame()
    agree = analytics.agreement(feedback)
    assert agree.judged == 0 and agree.rate is None
    assert analytics.confusion_matrix(feedback).to_numpy().tolist() == [[0, 0], [0, 0]]
    result = analytics.calibration(feedback)
    assert result.ece is None and result.bins["judged"].sum() == 0
    assert analytics.corrections(feedback).empty


def test_error_rates_by_confidence_use_the_verdicts_own_probability(store):
    # confidence = P(own verdict): 0.95 fake -> 0.95; 0.05 real -> 0.95; 1.0 fake -> 1.0 (last
    # bucket is closed); 0.55 fake -> 0.55; 0.4 with threshold 0.3 -> fake at 0.4 (below 50 %).
    cases = [(0.95, 0.5, "real"), (0.05, 0.5, "real"), (1.0, 0.5, "fake"), (0.55, 0.5, "real"),
             (0.4, 0.3, "real")]  # fmt: skip
    for prob, threshold, human in cases:
        store.add_feedback(predict(store, prob, threshold), human)
    table = analytics.error_rates(store.feedback_frame(), "confidence").set_index("group")
    assert list(table.index) == ["0%-50%", "50%-60%", "60%-70%", "70%-80%", "80%-90%", "90%-100%"]
    assert table.loc["90%-100%", ["judged", "errors"]].tolist() == [3, 1]
    assert table.loc["90%-100%", "error_rate"] == pytest.approx(1 / 3)
    assert table.loc["50%-60%", ["judged", "errors"]].tolist() == [1, 1]
    assert table.loc["0%-50%", ["judged", "errors"]].tolist() == [1, 1]
    assert table.loc["70%-80%", "judged"] == 0 and np.isnan(table.loc["70%-80%", "error_rate"])


def test_error_rates_by_format_size_and_version(store):
    rows = [  # (format, width, height, version, prob, human)
        ("JPEG", 50, 40, "2", 0.9, "real"),
        ("JPEG", 300, 200, "10", 0.9, "fake"),
        ("PNG", 2000, 1500, "10", 0.1, "fake"),
        ("PNG", 100, 64, "2", 0.1, "real"),
    ]
    for fmt, w, h, version, prob, human in rows:
        pid = predict(store, prob, format=fmt, width=w, height=h, model_version=version)
        store.add_feedback(pid, human)
    feedback = store.feedback_frame()

    by_format = analytics.error_rates(feedback, "format").set_index("group")
    assert by_format[["judged", "errors"]].to_dict("index") == {
        "JPEG": {"judged": 2, "errors": 1},
        "PNG": {"judged": 2, "errors": 1},
    }
    by_size = analytics.error_rates(feedback, "size").set_index("group")
    # shorter sides: 40 (<64), 200 (64-224), 1500 (>=1024), 64 (64-224)
    assert by_size["judged"].tolist() == [1, 2, 0, 0, 1]
    assert by_size["errors"].tolist() == [1, 0, 0, 0, 1]
    assert list(by_size.index) == ["<64 px", "64-224 px", "224-512 px", "512-1024 px", "≥1024 px"]
    by_version = analytics.error_rates(feedback, "model_version")
    assert by_version["group"].tolist() == ["2", "10"], "versions sort numerically"
    assert by_version["error_rate"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="cannot group"):
        analytics.error_rates(feedback, "colour")  # type: ignore[arg-type]


def test_calibration_bins_and_ece_by_hand(store):
    # bin 0.8-0.9: claims 0.8 twice, people say fake once; bin 0.1-0.2: claim 0.1, fake 0 of 1
    for prob, human in [(0.8, "fake"), (0.8, "real"), (0.1, "real")]:
        store.add_feedback(predict(store, prob), human)
    result = analytics.calibration(store.feedback_frame(), n_bins=10)
    bins = result.bins.set_index("bin")
    assert len(bins) == 10 and bins["judged"].sum() == 3
    assert bins.loc["0.8-0.9", ["judged", "mean_prob_fake", "frac_fake"]].tolist() == pytest.approx(
        [2, 0.8, 0.5]
    )
    assert bins.loc["0.1-0.2", ["judged", "mean_prob_fake", "frac_fake"]].tolist() == pytest.approx(
        [1, 0.1, 0.0]
    )
    # ECE = (2 * |0.8 - 0.5| + 1 * |0.1 - 0|) / 3
    assert result.ece == pytest.approx((2 * 0.3 + 0.1) / 3)
    with pytest.raises(ValueError):
        analytics.calibration(store.feedback_frame(), n_bins=0)


def test_activity_counts_per_day_and_fills_gaps():
    predictions = pd.DataFrame(
        {"created_at": [T0, T0 + timedelta(hours=1), T0 + timedelta(days=2)]}
    )
    feedback = pd.DataFrame({"created_at": [T0 + timedelta(days=2, hours=3)]})
    frame = analytics.activity(predictions, feedback, freq="D")
    wide = frame.pivot(index="period", columns="kind", values="count")
    assert [d.day for d in wide.index] == [2, 3, 4]
    assert wide["predictions"].tolist() == [2, 0, 1]
    assert wide["feedback"].tolist() == [0, 0, 1]
    assert analytics.activity(predictions.iloc[:0], feedback.iloc[:0]).empty


def test_filter_versions_and_corrections_newest_first(store):
    ids = [predict(store, 0.9, model_version=v) for v in ("1", "2", "2")]
    for pid in ids:
        store.add_feedback(pid, "real")  # every one a correction
    feedback = store.feedback_frame()
    assert len(analytics.filter_versions(feedback, ["2"])) == 2
    assert len(analytics.filter_versions(feedback, [])) == 3
    newest = analytics.corrections(feedback, limit=2)
    assert newest["prediction_id"].tolist() == [ids[2], ids[1]]
    assert analytics.sorted_versions(["10", "2", 2, "b", "a"]) == ["2", "10", "a", "b"]


def test_pca_projection_separates_clusters_and_attaches_labels(store):
    rng = np.random.default_rng(0)
    ids = [predict(store, p) for p in (0.9, 0.9, 0.9, 0.1, 0.1, 0.1)]
    store.add_feedback(ids[0], "fake")
    store.add_feedback(ids[3], "fake")
    offset = np.zeros(512)
    offset[7] = 20.0
    matrix = np.vstack([rng.normal(size=(3, 512)) + offset, rng.normal(size=(3, 512)) - offset])
    features = pd.DataFrame(
        {
            "prediction_id": ids,
            "model_version": "1",
            "created_at": [T0 + timedelta(minutes=i) for i in range(6)],
        }
    )
    projection = analytics.pca_projection(
        features, matrix.astype(np.float32), store.predictions_frame(), store.feedback_frame()
    )
    assert projection is not None
    points = projection.points.set_index("prediction_id")
    pc1 = points["pc1"]
    assert (np.sign(pc1.loc[ids[:3]]).nunique(), np.sign(pc1.loc[ids[3:]]).nunique()) == (1, 1)
    assert np.sign(pc1.loc[ids[0]]) != np.sign(pc1.loc[ids[3]]), "the clusters split on PC 1"
    assert projection.explained_variance[0] > 0.5
    assert points.loc[ids, "model_label"].tolist() == ["fake"] * 3 + ["real"] * 3
    assert points.loc[[ids[0], ids[1], ids[3]], "human_label"].tolist() == [
        "fake", analytics.NO_FEEDBACK, "fake"
    ]  # fmt: skip

    newest = analytics.pca_projection(
        features, matrix, store.predictions_frame(), store.feedback_frame(), max_points=4
    )
    assert newest is not None and sorted(newest.points["prediction_id"]) == sorted(ids[2:])
    assert analytics.pca_projection(features.iloc[:2], matrix[:2], store.predictions_frame(),
                                    store.feedback_frame()) is None  # fmt: skip
    with pytest.raises(ValueError, match="feature rows"):
        analytics.pca_projection(features, matrix[:3], store.predictions_frame(),
                                 store.feedback_frame())  # fmt: skip


# ------------------------------------------------------------------------------ provenance


def credentials(state: str | None = "Valid", **flags: object) -> str:
    """The JSON a prediction record holds for an upload with a C2PA manifest."""
    obj = {
        "manifest_present": True, "validation_state": state, "failure_codes": [],
        "claim_generator": "gen/1.0", "signer": "Signer Inc.",
        "digital_source_type": "trainedAlgorithmicMedia", "ai_generated_declared": False,
        "capture_declared": False, "disagrees": False,
    }  # fmt: skip
    obj.update(flags)
    return json.dumps(obj)


NO_CREDENTIALS = json.dumps({
    "manifest_present": False, "validation_state": None, "failure_codes": [],
    "claim_generator": None, "signer": None, "digital_source_type": None,
    "ai_generated_declared": False, "capture_declared": False, "disagrees": False,
})  # fmt: skip


def test_provenance_counts_by_state_declaration_and_disagreement(store):
    # Model "real" (0.1) on a validly signed AI declaration: the service flagged a disagreement.
    predict(store, 0.1, provenance=credentials("Valid", ai_generated_declared=True, disagrees=True))
    predict(store, 0.9, provenance=credentials("Trusted", ai_generated_declared=True))
    predict(store, 0.9, provenance=credentials("Trusted", capture_declared=True, disagrees=True))
    predict(store, 0.2, provenance=credentials("Invalid", ai_generated_declared=True))
    predict(store, 0.2, provenance=credentials("Pending"))  # a state this release does not know
    predict(store, 0.3, provenance=NO_CREDENTIALS)
    predict(store, 0.3)  # a record of an earlier release: no column value at all
    predict(store, 0.3, provenance="{not json")  # unreadable: counts as no credentials
    predict(store, 0.3, provenance='["a list"]')
    # Without a manifest nothing is declared, whatever else the object says.
    predict(store, 0.3, provenance=json.dumps({"manifest_present": False, "disagrees": True}))
    predict(store, 0.3, provenance=credentials("Valid", ai_generated_declared="true"))

    counts = analytics.provenance_counts(store.predictions_frame())
    assert counts == analytics.ProvenanceCounts(
        uploads=11, with_manifest=6, trusted=2, valid=2, invalid=1, unknown_state=1,
        ai_declared=3, capture_declared=1, disagreements=2,
    )  # fmt: skip
    flags = analytics.provenance_flags(store.predictions_frame())
    assert flags["state"].tolist()[:6] == ["Valid", "Trusted", "Trusted", "Invalid", "unknown",
                                           "no manifest"]  # fmt: skip


def test_provenance_per_version_and_per_day(store):
    t1 = T0 + timedelta(days=2)
    declared = credentials("Valid", ai_generated_declared=True, disagrees=True)
    predict(store, 0.1, model_version="10", created_at=T0, provenance=declared)
    predict(store, 0.1, model_version="2", created_at=T0 + timedelta(hours=1))
    predict(store, 0.9, model_version="2", created_at=t1, provenance=credentials("Trusted"))
    predictions = store.predictions_frame()

    by_version = analytics.provenance_table(predictions, "model_version").set_index("model_version")
    assert list(by_version.index) == ["2", "10"], "versions sort numerically"
    assert list(by_version.columns) == list(analytics.PROVENANCE_COUNTS)
    assert by_version.loc["2", ["uploads", "with_manifest", "trusted", "disagreements"]].tolist() \
        == [2, 1, 1, 0]  # fmt: skip
    assert by_version.loc["10", ["uploads", "valid", "ai_declared", "disagreements"]].tolist() \
        == [1, 1, 1, 1]  # fmt: skip

    by_day = analytics.provenance_table(predictions, "day")
    assert [d.day for d in by_day["day"]] == [2, 3, 4], "the empty day in between is listed"
    assert by_day["uploads"].tolist() == [2, 0, 1]
    assert by_day["disagreements"].tolist() == [1, 0, 0]
    assert str(by_day["day"].dt.tz) == "UTC"
    empty = analytics.provenance_table(predictions.iloc[:0], "day")
    assert empty.empty and list(empty.columns) == ["day", *analytics.PROVENANCE_COUNTS]
    with pytest.raises(ValueError, match="cannot group"):
        analytics.provenance_table(predictions, "signer")  # type: ignore[arg-type]


def test_provenance_disagreements_newest_first_with_their_credentials(store):
    first = predict(
        store,
        0.1,
        created_at=T0,
        provenance=credentials("Valid", ai_generated_declared=True, disagrees=True),
    )
    predict(store, 0.1, created_at=T0 + timedelta(minutes=1), provenance=credentials("Valid"))
    last = predict(
        store,
        0.9,
        created_at=T0 + timedelta(minutes=2),
        provenance=credentials(
            "Trusted",
            capture_declared=True,
            disagrees=True,
            digital_source_type="digitalCapture",
            signer=None,
        ),
    )
    table = analytics.provenance_disagreements(store.predictions_frame())
    assert table["id"].tolist() == [last, first]
    assert table.iloc[0][["validation_state", "digital_source_type", "signer"]].tolist() == [
        "Trusted", "digitalCapture", None
    ]  # fmt: skip
    assert table.iloc[1][["label", "claim_generator"]].tolist() == ["real", "gen/1.0"]
    assert analytics.provenance_disagreements(store.predictions_frame(), limit=1)["id"].tolist() \
        == [last]  # fmt: skip


def test_provenance_of_frames_without_the_column():
    # A frame of an older reader (no provenance column) counts every upload as without one.
    old = pd.DataFrame({"created_at": [T0, T0], "model_version": ["1", "1"]})
    counts = analytics.provenance_counts(old)
    assert (counts.uploads, counts.with_manifest, counts.disagreements) == (2, 0, 0)
    assert analytics.provenance_counts(old.iloc[:0]).uploads == 0
    assert analytics.parse_provenance(float("nan")) is None
    assert analytics.parse_provenance(b"\xff\xfe") is None
    assert analytics.parse_provenance({"manifest_present": True}) == {"manifest_present": True}
