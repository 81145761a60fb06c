"""Both Streamlit pages under ``streamlit.testing.v1.AppTest``, against the real service.

The detector page talks over HTTP to the session's ``bentoml serve`` subprocess (``service``
fixture); the admin page reads that service's SQLite store, feature store and image archive,
and the session's MLflow registry. Expected numbers are read straight from the store with plain
code, independently of :mod:`deepfakenet.analytics`.
"""

import hashlib
import io
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from deepfakenet import registry
from deepfakenet.features import read_features
from deepfakenet.store import Store
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
PASSWORD = "correct horse battery staple"
TIMEOUT = 120  # first runs import torch and talk to a CPU service


def image_bytes(seed: int, size: tuple[int, int] = (90, 70)) -> bytes:
    """A PNG no other test sends (so its content hash identifies its records)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def env(monkeypatch, service, trained_registry):
    """Point the pages at the session's service, its stores and the session's registry."""
    monkeypatch.setenv("DEEPFAKENET_SERVICE_URL", service.url)
    monkeypatch.setenv("DEEPFAKENET_HOME", str(service.home))
    monkeypatch.setenv("DEEPFAKENET_MLFLOW_TRACKING_URI", trained_registry.tracking_uri)
    monkeypatch.setenv("DEEPFAKENET_ADMIN_PASSWORD", PASSWORD)
    for name in ("DEEPFAKENET_STORE_URL", "DEEPFAKENET_FEATURE_DIR", "DEEPFAKENET_IMAGE_DIR"):
        monkeypatch.delenv(name, raising=False)
    st.cache_data.clear()  # cached reads are shared by every AppTest in this process
    st.cache_resource.clear()
    return service


@pytest.fixture
def store(service):
    store = Store(service.store_url, create=False)
    yield store
    store.close()


def detector() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()


def admin(password: str | None = PASSWORD) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("admin.py").run()
    if password is not None:
        at.text_input(key="admin.password").input(password)
        at.form_submit_button[0].click().run()
    return at


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ------------------------------------------------------------------------------ detector page


def test_detector_upload_result_feedback(env, store):
    data = image_bytes(101)
    sha = hashlib.sha256(data).hexdigest()
    at = detector()
    no_exceptions(at)
    assert "v1" in at.caption[0].value, "the page names the model the service serves"

    at.file_uploader(key="detector.upload").set_value(("photo.png", data, "image/png")).run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    shown = metrics(at)
    assert shown["Verdict"] in {"REAL", "FAKE"} and shown["Model version"] == "v1"
    prediction = at.session_state["detector.result"][1]
    assert shown["Probability of fake"] == f"{prediction.prob_fake:.1%}"
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("Original: 90x70 PNG") for c in captions), captions
    assert any(c.startswith("Grad-CAM") for c in captions), captions

    # Answer the form: the model is wrong, with a comment.
    other = "real" if prediction.label == "fake" else "fake"
    at.radio(key=f"detector.label.{prediction.prediction_id}").set_value(other)
    at.text_area(key=f"detector.comment.{prediction.prediction_id}").input("looks edited")
    at.form_submit_button[0].click().run()
    no_exceptions(at)
    assert at.success and "feedback was recorded" in at.success[0].value

    rows = store.feedback_frame()
    rows = rows[rows["prediction_id"] == prediction.prediction_id]
    assert len(rows) == 1, "one feedback row, stored by the service"
    assert (rows.iloc[0]["human_label"], rows.iloc[0]["comment"]) == (other, "looks edited")
    assert rows.iloc[0]["feedback_id"] in at.success[0].value
    # Five runs of the script, one /explain: reruns reuse the answer instead of re-scoring.
    scored = store.predictions_frame()
    assert (scored["sha256"] == sha).sum() == 1
    assert scored.set_index("id").loc[prediction.prediction_id, "endpoint"] == "explain"


def test_detector_bundled_sample(env):
    at = detector()
    at.radio(key="detector.source").set_value("Try a bundled sample").run()
    no_exceptions(at)
    names = at.selectbox(key="detector.sample").options
    assert len(names) >= 2 and any(n.startswith("fake") for n in names)
    at.selectbox(key="detector.sample").set_value(names[-1]).run()
    no_exceptions(at)
    assert metrics(at)["Verdict"] in {"REAL", "FAKE"}
    assert any("This sample is fake" in c.value for c in at.caption)


def test_detector_says_plainly_when_the_service_is_down(env, monkeypatch):
    monkeypatch.setenv("DEEPFAKENET_SERVICE_URL", f"http://127.0.0.1:{free_port()}")
    at = detector()
    no_exceptions(at)
    assert len(at.error) == 1
    message = at.error[0].value
    assert "unavailable" in message and "not reachable" in message and "make serve" in message
    assert not at.file_uploader, "nothing to upload to while the service is down"


def test_detector_shows_the_services_refusal(env):
    at = detector()
    at.file_uploader(key="detector.upload").set_value(("photo.png", b"not an image", "image/png"))
    at.run()
    no_exceptions(at)
    assert len(at.error) == 1
    assert "could not score this image" in at.error[0].value
    assert "Not an image" in at.error[0].value, "the service's own reason is shown"
    assert not at.metric


# ------------------------------------------------------------------------------ admin page


def test_admin_is_closed_without_a_configured_password(env, monkeypatch):
    monkeypatch.delenv("DEEPFAKENET_ADMIN_PASSWORD")
    at = admin(password=None)
    no_exceptions(at)
    assert "DEEPFAKENET_ADMIN_PASSWORD" in at.error[0].value
    assert not at.text_input and not at.metric and not at.dataframe and not at.sidebar.children


def test_admin_login_gate(env):
    at = admin(password=None)
    no_exceptions(at)
    assert [t.label for t in at.text_input] == ["Admin password"]
    assert not at.metric and not at.dataframe and not at.date_input

    at.text_input(key="admin.password").input("wrong").run()
    at.form_submit_button[0].click().run()
    assert at.error[0].value == "Wrong password."
    assert not at.metric and not at.dataframe

    at.text_input(key="admin.password").input(PASSWORD)
    at.form_submit_button[0].click().run()
    no_exceptions(at)
    assert "Predictions" in metrics(at) and not at.text_input, "the prompt is gone once in"


def seed_records(service) -> list[str]:
    """Score four new images through the service and give three of them feedback.

    The first is confirmed, the second corrected, the third confirmed and then corrected (the
    correction is the verdict that counts), the fourth gets none.
    """
    flip = {"real": "fake", "fake": "real"}
    ids, labels = [], {}
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for seed in range(4):
            files = {"image": ("upload.bin", image_bytes(200 + seed, (64 + 8 * seed, 64)))}
            response = client.post("/predict", files=files)
            assert response.status_code == 200, response.text
            ids.append(response.json()["prediction_id"])
            labels[ids[-1]] = response.json()["label"]
        verdicts = [(ids[0], labels[ids[0]]), (ids[1], flip[labels[ids[1]]]),
                    (ids[2], labels[ids[2]]), (ids[2], flip[labels[ids[2]]])]  # fmt: skip
        for pid, label in verdicts:
            body = {"prediction_id": pid, "label": label, "comment": f"seeded {pid[:6]}"}
            response = client.post("/feedback", json=body)
            assert response.status_code == 200, response.text
    return ids


def test_admin_numbers_match_the_store(env, store, service):
    ids = seed_records(service)
    deadline = time.monotonic() + 15  # the service flushes feature rows every 0.5 s in tests
    while not set(ids) <= set(read_features(service.home / "features")["prediction_id"]):
        assert time.monotonic() < deadline, "the seeded feature rows were never written"
        time.sleep(0.3)

    predictions, feedback = store.predictions_frame(), store.feedback_frame()
    latest: dict[str, tuple[str, str]] = {}  # prediction -> (model label, latest human label)
    for row in feedback.sort_values("created_at").itertuples():
        latest[row.prediction_id] = (row.model_label, row.human_label)
    agreed = sum(model == human for model, human in latest.values())
    cells = Counter(latest.values())

    at = admin()
    no_exceptions(at)
    shown = metrics(at)
    assert shown["Predictions"] == str(len(predictions))
    assert shown["Feedback"] == str(len(feedback))
    assert shown["Images judged"] == str(len(latest))
    assert shown["Agreement"] == f"{agreed / len(latest):.1%}"
    assert shown["Corrections"] == str(len(latest) - agreed)
    matrix = next(d.value for d in at.dataframe if d.value.index.name == "model label")
    for model_label in ("real", "fake"):
        for human_label in ("real", "fake"):
            assert matrix.loc[model_label, human_label] == cells[(model_label, human_label)]
    assert len(store.predictions_frame()) == len(predictions), "nothing was written meanwhile"

    corrections = next(d.value for d in at.dataframe if "people said" in d.value.columns)
    newest = corrections.iloc[0]
    assert newest["comment"] == f"seeded {ids[2][:6]}", "the latest correction comes first"
    assert str(newest["image"]).startswith("data:image/png;base64,"), "with its thumbnail"
    assert any("vectors of version 1" in c.value for c in at.caption), "the PCA was drawn"
    assert shown["Champion"] == "v1"
    registry = next(d.value for d in at.dataframe if "aliases" in d.value.columns)
    assert registry["aliases"].tolist() == ["champion"]

    # A date range before any record: every count drops to zero.
    at.date_input(key="admin.dates").set_value((date_ago(400), date_ago(399))).run()
    no_exceptions(at)
    assert metrics(at)["Predictions"] == "0" and metrics(at)["Agreement"] == "—"


def date_ago(days: int) -> date:
    return (datetime.now(UTC) - timedelta(days=days)).date()


# ------------------------------------------------------------------------------ admin: secrets

SECRET = "hunter2-s3cret"


@pytest.fixture
def bare_admin(monkeypatch):
    """The admin page alone: no service, an unreachable store and registry, both with passwords.

    One free wrong password per session, then a 100 s wait (nothing here waits for it).
    """
    for name in ("DEEPFAKENET_HOME", "DEEPFAKENET_FEATURE_DIR", "DEEPFAKENET_IMAGE_DIR"):
        monkeypatch.delenv(name, raising=False)
    store = f"postgresql+psycopg://app@127.0.0.1:{free_port()}/store?password={SECRET}"
    monkeypatch.setenv("DEEPFAKENET_STORE_URL", store)
    tracking = f"http://admin:{SECRET}@127.0.0.1:{free_port()}/"
    monkeypatch.setenv("DEEPFAKENET_MLFLOW_TRACKING_URI", tracking)
    # MLflow's retry policy is the page's own (no retry): with MLflow's defaults the dead
    # registry would hold the page about 4 minutes, past AppTest's timeout.
    for name in registry.FAIL_FAST_HTTP:  # unset now, and unset again afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DEEPFAKENET_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("DEEPFAKENET_ADMIN_LOGIN_FREE_FAILURES", "1")
    monkeypatch.setenv("DEEPFAKENET_ADMIN_LOGIN_DELAY_S", "100")
    st.cache_data.clear()
    st.cache_resource.clear()  # the login throttle lives there, one per process
    yield
    st.cache_resource.clear()


def shown_text(at: AppTest) -> str:
    elements = [*at.title, *at.info, *at.warning, *at.error, *at.caption, *at.markdown]
    return "\n".join(str(e.value) for e in elements)


def test_admin_never_shows_a_url_password(bare_admin):
    at = admin()
    no_exceptions(at)
    text = shown_text(at)
    assert "DeepFakeNet admin" in text, text
    assert "/store?password=***" in text, "the store URL is named, its password is not"
    assert "The registry cannot be shown" in text and "admin:***@127.0.0.1" in text
    assert SECRET not in text


def test_admin_sign_in_is_throttled(bare_admin):
    at = admin(password=None)
    for expected in ("Wrong password.", "Wrong password. Try again in 100 s."):
        at.text_input(key="admin.password").input("wrong")
        at.form_submit_button[0].click().run()
        assert at.error[0].value == expected
    # During the wait even the right password is refused, unchecked.
    at.text_input(key="admin.password").input(PASSWORD)
    at.form_submit_button[0].click().run()
    no_exceptions(at)
    assert at.error[0].value.startswith("Too many wrong passwords: try again in ")
    assert "DeepFakeNet admin" not in shown_text(at) and at.text_input
    # Another session has its own count (the process-wide one allows 20 failures).
    other = admin()
    no_exceptions(other)
    assert "DeepFakeNet admin" in shown_text(other)
