"""The admin page's parts alone: the login gate, each section, the charts, and the page on a store.

No service and no registry: the gate runs under ``AppTest.from_function`` with only a password
configured; a section runs with frames read back from a SQLite store filled here; the whole page
runs against that store (the registry is absent, which the page says). The end-to-end runs
against the real service are in ``tests/test_dashboards.py``.
"""

import json
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from deepfakenet import analytics
from deepfakenet.store import PredictionRecord, Store, new_id
from tests.conftest import ROOT

# The pages import their sibling modules by plain name, as `streamlit run dashboards/app.py`
# makes them importable; appended, so nothing there shadows an installed package.
if str(ROOT / "dashboards") not in sys.path:
    sys.path.append(str(ROOT / "dashboards"))

import admin_charts

APP = ROOT / "dashboards" / "app.py"
PASSWORD = "open sesame, but longer"
TIMEOUT = 60


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    """A password, and no cached read or login throttle left over from another test."""
    monkeypatch.setenv("DEEPFAKENET_ADMIN_PASSWORD", PASSWORD)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ------------------------------------------------------------------------------ the gate alone


def gate() -> None:
    """A page that is only the gate, and one line behind it."""
    import streamlit as st
    from admin_login import sign_out, signed_in

    from deepfakenet.settings import DashboardSettings

    if signed_in(DashboardSettings()):
        st.markdown("behind the gate")
        if st.button("Sign out"):
            sign_out()


def behind(at: AppTest) -> bool:
    return any(m.value == "behind the gate" for m in at.markdown)


def sign_in(at: AppTest, password: str) -> AppTest:
    at.text_input(key="admin.password").input(password)
    return at.form_submit_button[0].click().run()


def test_gate_alone_lets_in_the_right_password_only():
    at = AppTest.from_function(gate, default_timeout=TIMEOUT).run()
    no_exceptions(at)
    assert [t.label for t in at.text_input] == ["Admin password"] and not behind(at)

    sign_in(at, "open sesame")
    assert at.error[0].value == "Wrong password." and not behind(at)
    sign_in(at, PASSWORD)
    no_exceptions(at)
    assert behind(at) and not at.text_input and not at.error

    at.button[0].click().run()  # sign out: the prompt is back
    assert not behind(at) and [t.label for t in at.text_input] == ["Admin password"]


def test_gate_alone_is_closed_without_a_password(monkeypatch):
    monkeypatch.delenv("DEEPFAKENET_ADMIN_PASSWORD")
    at = AppTest.from_function(gate, default_timeout=TIMEOUT).run()
    no_exceptions(at)
    assert "DEEPFAKENET_ADMIN_PASSWORD" in at.error[0].value
    assert not at.text_input and not behind(at)


def test_gate_alone_throttles_and_a_new_password_signs_everyone_out(monkeypatch):
    monkeypatch.setenv("DEEPFAKENET_ADMIN_LOGIN_FREE_FAILURES", "1")
    monkeypatch.setenv("DEEPFAKENET_ADMIN_LOGIN_DELAY_S", "100")
    at = AppTest.from_function(gate, default_timeout=TIMEOUT).run()
    sign_in(at, "wrong")
    assert at.error[0].value == "Wrong password."
    sign_in(at, "wrong")
    assert at.error[0].value == "Wrong password. Try again in 100 s."
    sign_in(at, PASSWORD)  # during the wait even the right one is refused, unchecked
    assert at.error[0].value.startswith("Too many wrong passwords") and not behind(at)

    other = AppTest.from_function(gate, default_timeout=TIMEOUT).run()  # its own count
    assert behind(sign_in(other, PASSWORD))
    monkeypatch.setenv("DEEPFAKENET_ADMIN_PASSWORD", "rotated password")
    other.run()
    assert not behind(other), "a changed password signs the session out"


# ------------------------------------------------------------------------------ sections alone

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def credentials(state: str, **flags: object) -> str:
    obj = {
        "manifest_present": True, "validation_state": state, "failure_codes": [],
        "claim_generator": "Gen/1", "signer": "A Signer", "digital_source_type":
        "trainedAlgorithmicMedia", "ai_generated_declared": False, "capture_declared": False,
        "disagrees": False,
    }  # fmt: skip
    obj.update(flags)
    return json.dumps(obj)


@pytest.fixture
def store_url(tmp_path):
    """A store with six predictions: credentials in four, two of them contradicting the model."""
    url = f"sqlite:///{tmp_path}/store.db"
    store = Store(url)
    rows = [  # (prob_fake, version, minutes after T0, provenance)
        (0.2, "1", 0, credentials("Valid", ai_generated_declared=True, disagrees=True)),
        (0.9, "1", 1, credentials("Trusted", ai_generated_declared=True)),
        (0.8, "2", 2, credentials("Trusted", capture_declared=True, disagrees=True,
                                  signer="Camera Maker", digital_source_type="digitalCapture")),
        (0.3, "2", 3, credentials("Invalid")),
        (0.3, "2", 4, None),
        (0.6, "2", 5, "{broken"),
    ]  # fmt: skip
    for prob, version, minutes, provenance in rows:
        store.add_predictions([PredictionRecord(
            id=new_id(), created_at=T0 + timedelta(minutes=minutes), endpoint="predict",
            model_name="deepfakenet", model_version=version, prob_fake=prob,
            label="fake" if prob >= 0.5 else "real", threshold=0.5, sha256=f"{minutes:064x}",
            width=64, height=64, format="PNG", provenance=provenance,
        )])  # fmt: skip
    first = store.predictions_frame()["id"].iloc[0]
    store.add_feedback(first, "fake", "signed as AI")
    store.close()
    return url


def section(name: str, *args: object) -> None:
    """A page that is one section of the admin page."""
    import admin_sections

    getattr(admin_sections, name)(*args)


def run_section(name: str, *args: object) -> AppTest:
    at = AppTest.from_function(section, args=(name, *args), default_timeout=TIMEOUT).run()
    no_exceptions(at)
    return at


def test_provenance_section_alone(store_url):
    store = Store(store_url, create=False)
    predictions = store.predictions_frame()
    store.close()
    at = run_section("provenance_section", predictions)
    assert at.subheader[0].value.startswith("Provenance")
    shown = metrics(at)
    assert shown == {"With credentials": "4", "Declared AI": "2", "Disagreements": "2",
                     "Trusted signatures": "2"}  # fmt: skip
    caption = at.caption[0].value
    assert "1 valid with a signer not trusted" in caption and "1 invalid" in caption
    per_version = next(d.value for d in at.dataframe if "model_version" in d.value.columns)
    assert per_version.set_index("model_version")["disagreements"].to_dict() == {"1": 1, "2": 1}
    latest = next(d.value for d in at.dataframe if "model said" in d.value.columns)
    assert latest["signer"].tolist() == ["Camera Maker", "A Signer"], "newest first"
    assert latest["validation_state"].tolist() == ["Trusted", "Valid (not trusted)"]
    assert len(at.get("vega_lite_chart")) == 1, "the per-day chart"


def test_provenance_section_without_credentials_says_so():
    old = pd.DataFrame(
        {"created_at": [T0], "model_version": ["1"], "provenance": [None], "id": ["p"],
         "label": ["real"], "prob_fake": [0.1]}
    )  # fmt: skip
    at = run_section("provenance_section", old)
    assert metrics(at)["Declared AI"] == "0" and metrics(at)["Disagreements"] == "0"
    assert at.info[0].value == "No upload in this range carried content credentials."
    assert not at.dataframe and not at.get("vega_lite_chart")


def test_feedback_sections_alone(store_url):
    store = Store(store_url, create=False)
    predictions, feedback = store.predictions_frame(), store.feedback_frame()
    store.close()
    at = run_section("headline", predictions, feedback)
    assert metrics(at) == {"Predictions": "6", "Feedback": "1", "Images judged": "1",
                           "Agreement": "0.0%", "Corrections": "1"}  # fmt: skip
    at = run_section("agreement_section", feedback)
    matrix = at.dataframe[0].value
    assert matrix.loc["real", "fake"] == 1 and matrix.to_numpy().sum() == 1
    at = run_section("calibration_section", feedback.iloc[:0])
    assert at.info[0].value == "No judged predictions in this range."
    at = run_section("errors_section", feedback)
    assert len(at.tabs) == 4 and len(at.get("vega_lite_chart")) == 4


# ------------------------------------------------------------------------------ charts alone


def test_provenance_chart_stacks_the_states_and_marks_disagreement_days(store_url):
    store = Store(store_url, create=False)
    by_day = analytics.provenance_table(store.predictions_frame(), "day")
    store.close()
    spec = admin_charts.provenance_chart(by_day).to_dict()
    bars, marks = (spec["datasets"][layer["data"]["name"]] for layer in spec["layer"])
    states = {row["state"]: row["count"] for row in bars}
    assert states == {"trusted signature": 2, "valid, signer not trusted": 1, "invalid": 1,
                      "not validated": 0}  # fmt: skip
    assert [row["disagreements"] for row in marks] == [2]
    legend = spec["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert "trusted signature" in legend and "valid, signer not trusted" in legend


# ------------------------------------------------------------------------------ the page


def test_admin_page_on_a_store_without_service_or_registry(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFAKENET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEEPFAKENET_STORE_URL", store_url)
    monkeypatch.setenv("DEEPFAKENET_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/no-mlflow.db")
    for name in ("DEEPFAKENET_FEATURE_DIR", "DEEPFAKENET_IMAGE_DIR"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("admin.py").run()
    assert [t.label for t in at.text_input] == ["Admin password"] and not at.metric
    sign_in(at, PASSWORD)
    no_exceptions(at)
    shown = metrics(at)
    assert shown["Predictions"] == "6" and shown["Declared AI"] == "2"
    assert shown["Disagreements"] == "2" and shown["Corrections"] == "1"
    assert any("The registry cannot be shown" in w.value for w in at.warning)
    headers = [s.value for s in at.subheader]
    assert (
        headers.index("Latest corrections")
        < headers.index("Provenance (C2PA content credentials)")
        < headers.index("Model registry")
    )

    at.multiselect(key="admin.versions").set_value(["2"]).run()
    no_exceptions(at)
    assert metrics(at)["Predictions"] == "4" and metrics(at)["Disagreements"] == "1"
    at.sidebar.button[1].click().run()  # sign out
    assert not at.metric and [t.label for t in at.text_input] == ["Admin password"]
