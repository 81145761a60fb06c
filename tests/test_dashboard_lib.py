"""The library parts behind the dashboards: display helpers, the service client, settings,
bundled samples, the read-only monitoring helpers and the pages' pure chart builders. No server
is started here.
"""

import base64
import io
import json
import sys
from datetime import UTC, date, datetime, timedelta

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from deepfakenet.display import (
    describe_provenance,
    enlarged,
    outline_region,
    scaled_for_display,
    scored_region,
    source_type_words,
    thumbnail_data_uri,
)
from deepfakenet.errors import RegistryError
from deepfakenet.features import FeatureRow, write_features
from deepfakenet.imaging import decode_image
from deepfakenet.monitoring import (
    day_range_utc,
    load_features,
    read_registry,
    sqlite_file,
    store_is_ready,
)
from deepfakenet.preprocessing import denormalize, preprocess
from deepfakenet.samples import SAMPLE_SPECS, make_samples
from deepfakenet.service_client import (
    FramePoint,
    ServiceClient,
    ServiceRejectedError,
    ServiceUnavailableError,
    StrongestFrame,
    VideoVerdict,
    error_reason,
)
from deepfakenet.settings import DashboardSettings
from tests.conftest import ROOT, free_port

# The pages import their sibling modules by plain name, as `streamlit run dashboards/app.py`
# makes them importable; appended, so nothing there shadows an installed package.
if str(ROOT / "dashboards") not in sys.path:
    sys.path.append(str(ROOT / "dashboards"))


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------ display


@pytest.mark.parametrize(("width", "height"), [(200, 120), (121, 300), (64, 64)])
def test_scored_region_is_the_crop_preprocessing_takes(width, height):
    rng = np.random.default_rng(width)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    left, top, right, bottom = scored_region(width, height, 64)
    assert (right - left, bottom - top) == (64, 64)
    crop = denormalize(preprocess([Image.fromarray(pixels)], 64))[0]
    scored = torch.round(crop.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(scored, pixels[top:bottom, left:right])


def test_scored_region_of_a_small_image_is_its_centred_short_side():
    # Smaller than the crop: preprocessing upscales, so the whole short side is scored.
    assert scored_region(40, 30, 64) == (5, 0, 35, 30)
    assert scored_region(30, 50, 64) == (0, 10, 30, 40)
    with pytest.raises(ValueError):
        scored_region(0, 10, 64)


def test_large_images_are_scaled_for_display_and_small_ones_kept():
    big = Image.new("RGB", (4000, 1000), "white")
    shown, factor = scaled_for_display(big, max_side=1000)
    assert shown.size == (1000, 250) and factor == pytest.approx(0.25)
    small = Image.new("RGB", (300, 200))
    shown, factor = scaled_for_display(small, max_side=1000)
    assert shown.size == (300, 200) and factor == 1.0 and shown is not small
    outlined = outline_region(Image.new("RGB", (100, 100)), (20, 20, 60, 60), factor=0.5)
    assert outlined.getpixel((10, 20)) != (0, 0, 0) and outlined.getpixel((5, 5)) == (0, 0, 0)


def test_heatmap_is_enlarged_by_a_whole_factor_without_smoothing():
    rng = np.random.default_rng(3)
    heat = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    big = enlarged(png(heat), min_side=384)
    assert big.size == (384, 384)
    block = np.asarray(big)[:6, :6].reshape(-1, 3)
    assert (block == block[0]).all(), "nearest neighbour: each pixel becomes a 6x6 block"
    assert enlarged(png(heat), min_side=10).size == (64, 64)
    with pytest.raises(ValueError, match="not a readable image"):
        enlarged(b"nope")


def test_thumbnails_are_small_data_uris_and_missing_files_none(tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (400, 200), "red").save(path)
    uri = thumbnail_data_uri(path, side=96)
    assert uri is not None and uri.startswith("data:image/png;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (96, 48)
    assert thumbnail_data_uri(tmp_path / "purged.png") is None
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert thumbnail_data_uri(tmp_path / "broken.png") is None


# ------------------------------------------------------------------------------ service client


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([{"error": "no such prediction"}], "no such prediction"),  # BentoML API errors
        ({"error": "exactly one file"}, "exactly one file"),  # the upload guard
        ({"detail": "reloading is not enabled"}, "reloading is not enabled"),  # FastAPI routes
    ],
)
def test_error_reason_reads_every_error_shape(body, reason):
    assert error_reason(httpx.Response(400, json=body)) == reason
    assert error_reason(httpx.Response(502, text="Bad gateway")) == "Bad gateway"


def client_answering(status: int, body: object) -> ServiceClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return ServiceClient("http://detector.test/", transport=transport)


def test_client_maps_answers_to_named_errors():
    with pytest.raises(ServiceRejectedError) as rejected:
        client_answering(404, [{"error": "no prediction with id 'x'"}]).feedback("x", "real")
    assert rejected.value.status_code == 404 and "no prediction" in rejected.value.reason
    with pytest.raises(ServiceUnavailableError, match="failed on /model"):
        client_answering(503, {"error": "overloaded"}).model_info()
    with pytest.raises(ServiceUnavailableError, match="without a usable result"):
        client_answering(200, {"label": "fake"}).explain(b"image")
    with pytest.raises(ServiceUnavailableError, match="not reachable"):
        ServiceClient(f"http://127.0.0.1:{free_port()}", timeout_s=5).model_info()


def test_client_sends_the_image_as_a_multipart_file_and_decodes_the_heatmap():
    seen = {}
    heat = png(Image.new("RGB", (8, 8), "blue"))

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["body"] = request.read()
        return httpx.Response(200, json={
            "prediction_id": "p1", "label": "fake", "prob_fake": 0.75, "model_version": "3",
            "target": "fake", "heatmap_png": base64.b64encode(heat).decode(), "cam": [[0, 1]],
            "layer": "layer4",
        })  # fmt: skip

    client = ServiceClient("http://detector.test", transport=httpx.MockTransport(handler))
    result = client.explain(b"\x89PNG-bytes")
    assert seen["path"] == "/explain"
    assert b'name="image"; filename="upload"' in seen["body"] and b"\x89PNG-bytes" in seen["body"]
    assert b'name="target"' in seen["body"]
    assert (result.label, result.prob_fake, result.model_version) == ("fake", 0.75, "3")
    assert result.heatmap_png == heat and result.cam == [[0.0, 1.0]]


PROVENANCE = {
    "manifest_present": True, "validation_state": "Valid", "failure_codes": [],
    "claim_generator": "Generator/2.1", "signer": "Some Signer Ltd",
    "digital_source_type": "trainedAlgorithmicMedia", "ai_generated_declared": True,
    "capture_declared": False, "disagrees": True,
}  # fmt: skip


def test_explanation_carries_the_provenance_and_older_services_none():
    heat = base64.b64encode(png(Image.new("RGB", (4, 4)))).decode()
    body = {"prediction_id": "p1", "label": "real", "prob_fake": 0.2, "model_version": "3",
            "target": "real", "heatmap_png": heat, "cam": [[0.5]], "layer": "layer4"}  # fmt: skip
    assert client_answering(200, {**body, "provenance": PROVENANCE}).explain(b"x").provenance == (
        PROVENANCE
    )
    assert client_answering(200, body).explain(b"x").provenance is None, "an earlier release"
    assert client_answering(200, {**body, "provenance": "odd"}).explain(b"x").provenance is None


def video_answer(**overrides: object) -> dict:
    heat = base64.b64encode(png(Image.new("RGB", (8, 8), "red"))).decode()
    body = {
        "prediction_id": "v1", "label": "fake", "prob_fake": 0.81, "threshold": 0.5,
        "quantile": 0.9, "model_version": "4", "duration_s": 2.5, "width": 320, "height": 240,
        "sampled_fps": 2.0,
        "frames": [{"t": 0.0, "prob_fake": 0.1}, {"t": 0.5, "prob_fake": 0.2},
                   {"t": 1.0, "prob_fake": 0.9}, {"t": 1.5, "prob_fake": 0.3}],
        "strongest": {"index": 2, "t": 1.0, "prob_fake": 0.9, "heatmap_png": heat},
        "provenance": PROVENANCE,
    }  # fmt: skip
    body.update(overrides)
    return body


def test_client_sends_the_clip_as_a_multipart_video_and_reads_the_timeline():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"], seen["body"] = request.url.path, request.read()
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, json=video_answer())

    transport = httpx.MockTransport(handler)
    client = ServiceClient("http://detector.test", transport=transport, feedback_token="t0k")
    verdict = client.predict_video(b"\x00\x00\x00\x18ftypmp42", "clip.webm")
    assert seen["path"] == "/predict_video"
    assert b'name="video"; filename="clip.webm"' in seen["body"]
    assert b"Content-Type: video/webm" in seen["body"] and b"ftypmp42" in seen["body"]
    assert seen["auth"] is None, "the feedback token goes to /feedback only"
    assert (verdict.label, verdict.prob_fake, verdict.threshold, verdict.quantile) == (
        "fake", 0.81, 0.5, 0.9
    )  # fmt: skip
    assert (verdict.width, verdict.height, verdict.duration_s, verdict.sampled_fps) == (
        320, 240, 2.5, 2.0
    )  # fmt: skip
    assert verdict.frames[2] == FramePoint(t=1.0, prob_fake=0.9) and len(verdict.frames) == 4
    assert (verdict.strongest.index, verdict.strongest.t) == (2, 1.0)
    assert Image.open(io.BytesIO(verdict.strongest.heatmap_png)).size == (8, 8)
    assert verdict.provenance == PROVENANCE and verdict.model_version == "4"
    client.predict_video(b"data")
    assert b'filename="clip.mp4"' in seen["body"] and b"Content-Type: video/mp4" in seen["body"]


def test_client_maps_video_answers_to_named_errors():
    with pytest.raises(ServiceRejectedError) as rejected:
        client_answering(422, {"error": "not a video: no video stream"}).predict_video(b"x")
    assert (
        rejected.value.status_code == 422
        and rejected.value.reason == "not a video: no video stream"
    )
    with pytest.raises(ServiceRejectedError, match="413"):
        client_answering(413, {"error": "too large"}).predict_video(b"x")
    with pytest.raises(ServiceUnavailableError, match="/predict_video without a usable result"):
        client_answering(200, video_answer(strongest={"index": 0})).predict_video(b"x")
    with pytest.raises(ServiceUnavailableError, match="without a usable result"):
        client_answering(200, video_answer(frames=[{"t": "soon"}])).predict_video(b"x")
    with pytest.raises(ServiceUnavailableError, match="failed on /predict_video"):
        client_answering(500, {"error": "boom"}).predict_video(b"x")
    assert (
        client_answering(200, video_answer(provenance=None)).predict_video(b"x").provenance is None
    )


# ------------------------------------------------------------------------------ provenance words


def test_a_valid_signature_is_never_called_trusted():
    view = describe_provenance({**PROVENANCE, "disagrees": False}, "fake")
    assert view.present and view.reported and view.level == "info" and view.conflict is None
    details = dict(view.details)
    assert details["Signature"] == "valid signature, signer not trusted"
    assert "trusted signature" not in view.headline and "signer not trusted" in view.headline
    assert details["Signer"] == "Some Signer Ltd" and details["Made with"] == "Generator/2.1"
    assert details["Declared source"].startswith("trainedAlgorithmicMedia (")
    assert "declare AI-generated content" in view.headline

    trusted = describe_provenance({**PROVENANCE, "validation_state": "Trusted"}, "fake")
    assert trusted.level == "success" and dict(trusted.details)["Signature"] == "trusted signature"
    # A state this release does not know is never upgraded to trusted.
    odd = describe_provenance({**PROVENANCE, "validation_state": "Trusted-ish"}, "fake")
    assert dict(odd.details)["Signature"] == "not validated" and odd.level == "info"


def test_invalid_absent_and_unreported_credentials():
    invalid = describe_provenance(
        {**PROVENANCE, "validation_state": "Invalid", "disagrees": False,
         "failure_codes": ["assertion.dataHash.mismatch"]}, "real")  # fmt: skip
    assert invalid.level == "warning" and "failed validation" in invalid.headline
    assert dict(invalid.details)["Failure codes"] == "assertion.dataHash.mismatch"

    none = describe_provenance({"manifest_present": False, "validation_state": None}, "real")
    assert (none.reported, none.present, none.details, none.conflict) == (True, False, (), None)
    assert "No content credentials" in none.headline

    old = describe_provenance(None, "real")
    assert not old.reported and old.level == "none" and "did not report" in old.headline
    # Fields of the wrong type (the object comes over the network) are left out, not shown.
    odd = describe_provenance(
        {"manifest_present": True, "signer": 7, "claim_generator": "  ", "failure_codes": "x"},
        "fake",
    )
    assert dict(odd.details) == {"Signature": "not validated"}


def test_disagreement_names_the_declaration_it_contradicts():
    ai = describe_provenance(PROVENANCE, "real")
    assert ai.conflict is not None
    assert "declare this file AI-generated" in ai.conflict and "judged it real" in ai.conflict
    capture = describe_provenance(
        {**PROVENANCE, "validation_state": "Trusted", "ai_generated_declared": False,
         "capture_declared": True, "digital_source_type": "digitalCapture"}, "fake")  # fmt: skip
    assert capture.conflict is not None and "trusted camera-capture claim" in capture.conflict
    assert "judged it fake" in capture.conflict
    assert source_type_words("http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture") == (
        "digitalCapture (a camera capture)"
    )
    assert source_type_words("somethingNew") == "somethingNew"


# ------------------------------------------------------------------------------ page charts


def verdict_with(probs: list[float], strongest: int, threshold: float = 0.5) -> VideoVerdict:
    frames = [FramePoint(t=0.5 * i, prob_fake=p) for i, p in enumerate(probs)]
    return VideoVerdict(
        prediction_id="v", label="fake", prob_fake=max(probs), threshold=threshold, quantile=0.9,
        model_version="1", duration_s=0.5 * len(probs), width=64, height=48, sampled_fps=2.0,
        frames=frames,
        strongest=StrongestFrame(strongest, frames[strongest].t, probs[strongest], b""),
    )  # fmt: skip


def test_timeline_chart_has_the_frames_the_threshold_and_the_strongest_frame():
    from detector_charts import timeline_chart, timeline_frame

    verdict = verdict_with([0.1, 0.3, 0.95, 0.4], strongest=2, threshold=0.62)
    frame = timeline_frame(verdict)
    assert frame["t"].tolist() == [0.0, 0.5, 1.0, 1.5]
    assert frame["strongest"].tolist() == [False, False, True, False]

    spec = timeline_chart(verdict).to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["line", "rule", "point"]
    datasets = spec["datasets"]
    line, rule, strongest = (datasets[layer["data"]["name"]] for layer in spec["layer"])
    assert [row["prob_fake"] for row in line] == [0.1, 0.3, 0.95, 0.4]
    assert rule == [{"threshold": 0.62}]
    assert [(row["t"], row["prob_fake"]) for row in strongest] == [(1.0, 0.95)]
    assert spec["layer"][0]["encoding"]["y"]["scale"]["domain"] == [0, 1]
    json.dumps(spec)  # what Streamlit sends to the browser


# ------------------------------------------------------------------------------ settings


def test_dashboard_settings_from_env(monkeypatch):
    monkeypatch.setenv("DEEPFAKENET_SERVICE_URL", "http://detector:3000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///generic.db")
    assert DashboardSettings().service_url == "http://detector:3000"
    assert DashboardSettings().mlflow_tracking_uri == "sqlite:///generic.db"
    monkeypatch.setenv("DEEPFAKENET_MLFLOW_TRACKING_URI", "sqlite:///ours.db")
    assert DashboardSettings().mlflow_tracking_uri == "sqlite:///ours.db", "ours wins"


def test_admin_password_check(monkeypatch):
    monkeypatch.delenv("DEEPFAKENET_ADMIN_PASSWORD", raising=False)
    closed = DashboardSettings()
    assert not closed.admin_enabled and not closed.admin_password_matches("")
    assert not DashboardSettings(admin_password="").admin_password_matches("")
    monkeypatch.setenv("DEEPFAKENET_ADMIN_PASSWORD", "pässwörd")
    settings = DashboardSettings()
    assert settings.admin_enabled and settings.admin_password_matches("pässwörd")
    assert not settings.admin_password_matches("pässwörd ")
    assert not settings.admin_password_matches("")
    assert "pässwörd" not in repr(settings), "the secret never shows in logs or reprs"


# ------------------------------------------------------------------------------ samples


def test_samples_are_deterministic_labelled_images():
    first, second = make_samples(side=96, seed=0), make_samples(side=96, seed=0)
    assert [s.png for s in first] == [s.png for s in second]
    assert [s.label for s in first] == [spec[0] for spec in SAMPLE_SPECS]
    assert {s.label for s in first} == {"real", "fake"}
    assert len({s.name for s in first}) == len(first)
    for sample in first:
        decoded = decode_image(sample.png)
        assert (decoded.width, decoded.height, decoded.format) == (96, 96, "PNG")
    assert make_samples(side=96, seed=1)[0].png != first[0].png


# ------------------------------------------------------------------------------ monitoring


def test_day_range_is_whole_utc_days():
    since, until = day_range_utc(date(2026, 3, 1), date(2026, 3, 2))
    assert since == datetime(2026, 3, 1, tzinfo=UTC) and until == datetime(2026, 3, 3, tzinfo=UTC)
    with pytest.raises(ValueError):
        day_range_utc(date(2026, 3, 2), date(2026, 3, 1))


def test_readers_never_create_what_they_read(tmp_path):
    store_url = f"sqlite:///{tmp_path}/missing/store.db"
    assert not store_is_ready(store_url)
    assert not (tmp_path / "missing").exists()
    registry_uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(RegistryError, match="no MLflow registry"):
        read_registry(registry_uri, "deepfakenet", "deepfakenet")
    assert not (tmp_path / "mlflow.db").exists()
    assert sqlite_file("postgresql+psycopg://u@h/db") is None
    assert sqlite_file("sqlite:///:memory:") is None


def test_load_features_trims_day_partitions_to_the_exact_range(tmp_path):
    t0 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    times = [t0, t0 + timedelta(hours=2), t0 + timedelta(hours=30)]
    rows = [FeatureRow(f"p{i}", "1" if i < 2 else "2", t, np.full(512, i, np.float32))
            for i, t in enumerate(times)]  # fmt: skip
    write_features(tmp_path, rows)
    since, until = t0 + timedelta(minutes=30), t0 + timedelta(days=2)
    got = load_features(tmp_path, since, until)
    assert got.rows["prediction_id"].tolist() == ["p1", "p2"]
    assert got.matrix.shape == (2, 512) and got.matrix[0, 0] == 1
    assert load_features(tmp_path, since, until, ["2"]).rows["prediction_id"].tolist() == ["p2"]
    assert load_features(tmp_path / "none", since, until).matrix.shape == (0, 512)
