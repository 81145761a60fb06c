"""Both Streamlit pages under ``streamlit.testing.v1.AppTest``, against the real service.

The detector page talks over HTTP to the session's ``bentoml serve`` subprocess (``service``
fixture); the admin page reads that service's SQLite store, feature store and image archive,
and the session's MLflow registry. Expected numbers are read straight from the store with plain
code, independently of :mod:`deepfakenet.analytics`.

The detector's answers that a small trained model cannot be made to give on demand (a verdict
that contradicts signed credentials, a trusted signature, a refused clip) come from a scripted
stand-in of the service over real HTTP (``scripted`` fixture), so the page's whole path, client
included, still runs. The admin page's parts alone are in ``tests/test_admin_pages.py``.
"""

import base64
import hashlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from deepfakenet import registry
from deepfakenet.data.clips import encode_clip
from deepfakenet.features import read_features
from deepfakenet.store import Store
from tests.conftest import free_port
from tests.signing import make_credentials, make_image, sign_image

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


def shown_credentials(at: AppTest) -> dict[str, str]:
    """The detector's content-credentials table as ``{credential: value}`` ({} when none)."""
    for frame in at.dataframe:
        if list(frame.value.columns) == ["credential", "value"]:
            return dict(zip(frame.value["credential"], frame.value["value"], strict=True))
    return {}


def test_detector_shows_an_unsigned_images_lack_of_credentials(env):
    at = detector()
    at.file_uploader(key="detector.upload").set_value(("photo.png", image_bytes(102), "image/png"))
    at.run()
    no_exceptions(at)
    assert any("No content credentials" in i.value for i in at.info), [i.value for i in at.info]
    assert not shown_credentials(at) and not at.warning


@pytest.mark.parametrize(
    ("organisation", "signature"),
    [
        # The session service's trust anchor is make_credentials()'s CA (called without
        # arguments: the cache keys on the arguments as written, and a new CA is not trusted).
        (None, "trusted signature"),
        ("Some Other Org", "valid signature, signer not trusted"),  # a CA it does not know
    ],
)
def test_detector_shows_a_signed_images_credentials(env, store, organisation, signature):
    pki = make_credentials() if organisation is None else make_credentials(organisation)
    signed = sign_image(make_image("JPEG", (96, 80), seed=7), "image/jpeg", pki.chain_pem,
                        pki.key_pem)  # fmt: skip
    at = detector()
    at.file_uploader(key="detector.upload").set_value(("signed.jpg", signed, "image/jpeg")).run()
    no_exceptions(at)
    result = at.session_state["detector.result"][1]
    assert result.provenance is not None and result.provenance["manifest_present"] is True
    credentials = shown_credentials(at)
    assert credentials["Signature"] == signature
    assert credentials["Declared source"].startswith("trainedAlgorithmicMedia")
    assert "deepfakenet-tests" in credentials["Made with"]
    trusted = [s.value for s in at.success if "trusted signature" in s.value]
    assert bool(trusted) == (organisation is None), "only a trust anchor's signature is trusted"
    conflict = [w.value for w in at.warning if "contradict the verdict" in w.value]
    assert bool(conflict) == (result.label == "real"), "AI declared: only 'real' contradicts it"
    recorded = store.predictions_frame().set_index("id").loc[result.prediction_id, "provenance"]
    assert json.loads(recorded)["disagrees"] == bool(conflict)


def clip_bytes(seed: int, frames: int = 12, size: int = 64) -> bytes:
    """A short H.264 MP4 of noise frames no other test sends."""
    rng = np.random.default_rng(seed)
    pictures = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(frames)]
    return encode_clip(pictures, fps=6.0)


def test_detector_video_timeline_and_feedback(env, store):
    at = detector()
    at.radio(key="detector.media").set_value("Video").run()
    no_exceptions(at)
    assert not at.file_uploader(key="detector.video_upload").value
    clip = clip_bytes(301)
    at.file_uploader(key="detector.video_upload").set_value(("holiday.mp4", clip, "video/mp4"))
    at.run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    result = at.session_state["detector.video_result"][1]
    shown = metrics(at)
    assert shown["Verdict"] == result.label.upper()
    assert shown["Probability of fake"] == f"{result.prob_fake:.1%}"
    assert len(at.get("vega_lite_chart")) == 1, "the timeline"
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith(f"Strongest frame at {result.strongest.t:.2f} s") for c in captions)
    assert any("No content credentials" in i.value for i in at.info)

    other = "real" if result.label == "fake" else "fake"
    at.radio(key=f"detector.label.{result.prediction_id}").set_value(other)
    at.form_submit_button[0].click().run()
    no_exceptions(at)
    assert any("feedback was recorded" in s.value for s in at.success)
    rows = store.feedback_frame()
    assert rows.set_index("prediction_id").loc[result.prediction_id, "human_label"] == other
    scored = store.predictions_frame().set_index("id")
    assert scored.loc[result.prediction_id, "endpoint"] == "predict_video"
    assert (scored["sha256"] == hashlib.sha256(clip).hexdigest()).sum() == 1, "scored once"


# ------------------------------------------------------------------------------ detector: scripted


class ScriptedService:
    """A stand-in of the service on a loopback port: canned answers, every request kept."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, object]] = {
            "/model": (200, {"model_name": "deepfakenet", "model_version": "7",
                             "alias": "champion", "input_size": 64}),
            "/feedback": (200, {"feedback_id": "fb-1"}),
        }  # fmt: skip
        self.requests: list[tuple[str, bytes]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                scripted.requests.append((self.path, self.rfile.read(length)))
                status, body = scripted.answers.get(self.path, (404, {"error": "no such route"}))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def calls(self, path: str) -> list[bytes]:
        return [body for seen, body in self.requests if seen == path]


@pytest.fixture
def scripted(monkeypatch) -> Iterator[ScriptedService]:
    service = ScriptedService()
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DEEPFAKENET_SERVICE_URL", service.url)
    monkeypatch.delenv("DEEPFAKENET_FEEDBACK_TOKEN", raising=False)
    st.cache_data.clear()
    yield service
    service.server.shutdown()
    service.server.server_close()


def heatmap_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "orange").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def credentials(state: str, **flags: object) -> dict:
    obj = {
        "manifest_present": True, "validation_state": state, "failure_codes": [],
        "claim_generator": "ImageMaker/3.0", "signer": "Generator Co", "digital_source_type":
        "trainedAlgorithmicMedia", "ai_generated_declared": True, "capture_declared": False,
        "disagrees": False,
    }  # fmt: skip
    obj.update(flags)
    return obj


def video_answer(**overrides: object) -> dict:
    body = {
        "prediction_id": "clip-1", "label": "real", "prob_fake": 0.3, "threshold": 0.5,
        "quantile": 0.9, "model_version": "7", "duration_s": 2.5, "width": 320, "height": 240,
        "sampled_fps": 2.0,
        "frames": [{"t": 0.5 * i, "prob_fake": p} for i, p in enumerate([0.1, 0.2, 0.45, 0.3])],
        "strongest": {"index": 2, "t": 1.0, "prob_fake": 0.45, "heatmap_png": heatmap_b64()},
        "provenance": credentials("Valid", disagrees=True),
    }  # fmt: skip
    body.update(overrides)
    return body


def test_detector_video_against_a_scripted_service(scripted):
    scripted.answers["/predict_video"] = (200, video_answer())
    at = detector()
    at.radio(key="detector.media").set_value("Video").run()
    upload = ("holiday at grandma's.MOV", b"\x00\x00\x00\x14ftypqt  ", "video/quicktime")
    at.file_uploader(key="detector.video_upload").set_value(upload).run()
    no_exceptions(at)
    (sent,) = scripted.calls("/predict_video")
    assert b'name="video"; filename="clip.mov"' in sent and b"grandma" not in sent
    assert metrics(at) == {"Verdict": "REAL", "Probability of fake": "30.0%",
                           "Model version": "v7"}  # fmt: skip
    assert any("4 frames of a 2.5 s 320x240 clip" in c.value for c in at.caption)
    assert any("90% quantile" in c.value and "fake from 50.0%" in c.value for c in at.caption)
    credentials_shown = shown_credentials(at)
    assert credentials_shown["Signature"] == "valid signature, signer not trusted"
    assert credentials_shown["Signer"] == "Generator Co"
    (conflict,) = [w.value for w in at.warning if "contradict the verdict" in w.value]
    assert "declare this file AI-generated" in conflict and "judged it real" in conflict
    assert not [s for s in at.success], "a valid signature is not shown as a success"
    assert len(at.get("vega_lite_chart")) == 1 and len(at.get("video")) == 1
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("Strongest frame at 1.00 s (P(fake) 45.0%)") for c in captions)

    at.radio(key="detector.label.clip-1").set_value("fake")
    at.text_area(key="detector.comment.clip-1").input("the face flickers")
    at.form_submit_button[0].click().run()
    no_exceptions(at)
    (feedback,) = scripted.calls("/feedback")
    assert json.loads(feedback) == {"prediction_id": "clip-1", "label": "fake",
                                    "comment": "the face flickers"}  # fmt: skip
    assert any("fb-1" in s.value for s in at.success)
    assert len(scripted.calls("/predict_video")) == 1, "reruns reuse the answer"


def test_detector_shows_the_services_refusal_of_a_clip(scripted):
    scripted.answers["/predict_video"] = (422, {"error": "not a video: no video stream"})
    at = detector()
    at.radio(key="detector.media").set_value("Video").run()
    at.file_uploader(key="detector.video_upload").set_value(("a.mp4", b"RIFF", "video/mp4"))
    at.run()
    no_exceptions(at)
    assert [e.value for e in at.error] == [
        "The service could not score this video: Not a video: no video stream."
    ]
    assert not at.metric and not at.get("vega_lite_chart")


def test_detector_shows_trusted_credentials_as_trusted(scripted):
    trusted = credentials("Trusted", ai_generated_declared=False, capture_declared=True,
                          digital_source_type="digitalCapture", signer="Camera Maker")  # fmt: skip
    scripted.answers["/explain"] = (200, {
        "prediction_id": "img-1", "label": "real", "prob_fake": 0.12, "model_version": "7",
        "target": "real", "heatmap_png": heatmap_b64(), "cam": [[0.0]], "layer": "layer4",
        "provenance": trusted,
    })  # fmt: skip
    at = detector()
    at.file_uploader(key="detector.upload").set_value(("p.png", image_bytes(5), "image/png")).run()
    no_exceptions(at)
    assert [s.value for s in at.success] == [
        "Content credentials that declare a camera capture: trusted signature."
    ]
    assert shown_credentials(at)["Declared source"] == "digitalCapture (a camera capture)"
    assert not at.warning, "a trusted capture claim agrees with 'real'"


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
