"""Provenance and video over HTTP: the real service, signed uploads, clips, and hostile clips.

The session's ``service`` trusts the test CA of :mod:`tests.signing` and has small video
limits (``tests.conftest.SERVICE_VIDEO_LIMITS``), so each limit can be broken by a small file.
"""

from __future__ import annotations

import base64
import io
import json
import time
from fractions import Fraction

import httpx
import numpy as np
import pytest
from PIL import Image

from deepfakenet.store import Store
from tests.conftest import SERVICE_VIDEO_LIMITS
from tests.signing import (
    DIGITAL_CAPTURE,
    SIGNER_ORG,
    make_credentials,
    make_image,
    sign_image,
    tamper_pixels,
    with_garbage_manifest,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def http(service) -> httpx.Client:
    with httpx.Client(base_url=service.url, timeout=120) as client:
        yield client


@pytest.fixture
def store(service) -> Store:
    store = Store(service.store_url, create=False)
    yield store
    store.close()


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    return body["error"]


def recorded_provenance(store: Store, prediction_id: str) -> dict | None:
    stored = store.get_prediction(prediction_id).provenance
    return None if stored is None else json.loads(stored)


# ------------------------------------------------------------------------------ provenance


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_manifest_state_is_reported_beside_the_verdict_and_recorded(http, store, fmt):
    mime = f"image/{fmt.lower()}"
    trusted = make_credentials()  # the service's trust anchor
    stranger = make_credentials("Someone Else")  # a valid chain, not anchored
    plain = make_image(fmt, (64, 64), seed=3)
    signed = sign_image(plain, mime, trusted.chain_pem, trusted.key_pem)
    cases = {
        "none": plain,
        "trusted": signed,
        "untrusted": sign_image(plain, mime, stranger.chain_pem, stranger.key_pem),
        "tampered": tamper_pixels(signed, mime),
        "garbage": with_garbage_manifest(plain, mime),
    }
    seen = {}
    for name, data in cases.items():
        route = "/explain" if name in ("untrusted", "garbage") else "/predict"
        response = http.post(route, files={"image": (f"x.{fmt.lower()}", data, mime)})
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        prov = body["provenance"]
        # The verdict is the pixel model's: the same bytes give the same probability either way.
        assert 0 <= body["prob_fake"] <= 1 and body["label"] in ("real", "fake")
        # Recorded as answered, but nothing without a manifest, and the signer only when
        # trusted (an untrusted certificate's name may be a person's).
        expected = None if name == "none" else dict(prov)
        if expected is not None and prov["validation_state"] != "Trusted":
            expected["signer"] = None
        assert recorded_provenance(store, body["prediction_id"]) == expected, name
        seen[name] = (prov, body)

    # The verdict is the pixel model's: a manifest changes nothing about it (the signed image's
    # pixels are the plain one's; PNG is lossless, a JPEG's manifest does not touch its scans).
    assert seen["trusted"][1]["prob_fake"] == pytest.approx(seen["none"][1]["prob_fake"], abs=1e-6)
    seen = {name: (prov, body["label"]) for name, (prov, body) in seen.items()}
    none, _ = seen["none"]
    assert not none["manifest_present"] and none["validation_state"] is None
    assert not none["ai_generated_declared"] and not none["disagrees"]

    prov, label = seen["trusted"]
    assert prov["manifest_present"] and prov["validation_state"] == "Trusted"
    assert prov["failure_codes"] == []
    assert prov["signer"] == SIGNER_ORG and prov["claim_generator"].startswith("deepfakenet-tests")
    assert prov["digital_source_type"] == "trainedAlgorithmicMedia"
    assert prov["ai_generated_declared"] and prov["disagrees"] == (label == "real")

    prov, label = seen["untrusted"]
    assert prov["validation_state"] == "Valid", "a signer outside the anchors is never trusted"
    assert "signingCredential.untrusted" in prov["failure_codes"]
    assert prov["ai_generated_declared"] and prov["disagrees"] == (label == "real")

    prov, _ = seen["tampered"]
    assert prov["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in prov["failure_codes"]
    assert not prov["disagrees"], "an invalid manifest is no evidence against the verdict"

    prov, _ = seen["garbage"]
    assert prov["manifest_present"] and prov["validation_state"] == "Invalid"
    assert "manifest.unreadable" in prov["failure_codes"] and not prov["disagrees"]


def test_a_trusted_capture_claim_disagrees_only_with_a_fake_verdict(http):
    trusted = make_credentials()
    data = sign_image(
        make_image("JPEG", (64, 64), seed=5),
        "image/jpeg",
        trusted.chain_pem,
        trusted.key_pem,
        digital_source_type=DIGITAL_CAPTURE,
    )
    body = http.post("/predict", files={"image": ("c.jpg", data, "image/jpeg")}).json()
    prov = body["provenance"]
    assert prov["capture_declared"] and not prov["ai_generated_declared"]
    assert prov["disagrees"] == (body["label"] == "fake")


# ------------------------------------------------------------------------------ video


def _frames(n: int, side: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (side, side * 2, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, i % side : i % side + side]) for i in range(n)]


def post_video(http: httpx.Client, data: bytes, name: str = "clip.mp4") -> httpx.Response:
    return http.post("/predict_video", files={"video": (name, data, "video/mp4")})


def count_predictions(store: Store) -> int:
    return len(store.predictions_frame())


def test_a_clip_gets_a_verdict_a_timeline_and_the_strongest_frame(http, store, service):
    from deepfakenet.data.clips import encode_clip

    clip = encode_clip(_frames(60), codec="libx264", fps=20, quality=23)  # 3 s
    response = post_video(http, clip)
    assert response.status_code == 200, response.text
    body = response.json()
    rate = float(SERVICE_VIDEO_LIMITS["DEEPFAKENET_VIDEO_SAMPLE_FPS"])
    times = [f["t"] for f in body["frames"]]
    assert len(times) == pytest.approx(3 * rate, abs=1)
    assert times == sorted(times) and times[0] < 0.3 and times[-1] < 3.0
    probs = [f["prob_fake"] for f in body["frames"]]
    strongest = body["strongest"]
    assert strongest["prob_fake"] == max(probs) == probs[strongest["index"]]
    assert strongest["t"] == times[strongest["index"]]
    heat = Image.open(io.BytesIO(base64.b64decode(strongest["heatmap_png"])))
    assert heat.format == "PNG" and heat.width >= 8
    assert np.quantile(probs, body["quantile"]) == pytest.approx(body["prob_fake"], abs=1e-6)
    assert body["label"] == ("fake" if body["prob_fake"] >= body["threshold"] else "real")
    assert (body["width"], body["height"], body["duration_s"]) == (64, 64, pytest.approx(3, 0.1))
    assert not body["provenance"]["manifest_present"]
    record = store.get_prediction(body["prediction_id"])
    assert record.endpoint == "predict_video" and record.prob_fake == pytest.approx(
        body["prob_fake"]
    )
    # Feedback on a clip works like feedback on an image (the loop learns its strongest frame).
    feedback = http.post(
        "/feedback", json={"prediction_id": body["prediction_id"], "label": "real"}
    )
    assert feedback.status_code == 200, feedback.text
    archived = service.home / "images"
    deadline = time.monotonic() + 10
    while not any(archived.rglob(f"{record.sha256}*")):
        assert time.monotonic() < deadline, "the strongest frame is archived for the feedback loop"
        time.sleep(0.1)


def test_a_variable_frame_rate_clip_is_timed_by_its_timestamps(http):
    from deepfakenet.data.clips import encode_clip
    from tests.test_video import solid_frames

    pts = [0, 100, 150, 700, 1000, 2600]  # milliseconds, irregular
    data = encode_clip(
        solid_frames(6, step=40), "libx264", quality=10, pts=pts, time_base=Fraction(1, 1000)
    )
    response = post_video(http, data)
    assert response.status_code == 200, response.text
    # Sampled at 4 fps: the first frame shown at or after 0, 0.25, 0.5, ...: 0, 0.7, 1.0, 2.6.
    times = [f["t"] for f in response.json()["frames"]]
    assert times == pytest.approx([0.0, 0.7, 1.0, 2.6])


def _hostile_clips() -> dict[str, tuple[bytes, int, str]]:
    """Name -> (upload, expected status, words the reason holds)."""
    from deepfakenet.data.clips import encode_clip
    from tests.test_video import mux, noise_frames

    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(jpeg, "JPEG")
    half = encode_clip(noise_frames(20), "libx264", fps=10)
    hours = 100 * 3600 * 1000
    return {
        "not a video": (b"hello, this is text", 400, "accepted container"),
        "an image": (jpeg.getvalue(), 400, "image (JPEG)"),
        "empty": (b"", 400, "empty"),
        "audio only": (mux("mp4", video=False, audio_frames=20), 400, "audio only"),
        "zero frames": (mux("matroska", audio_frames=20), 400, "no decodable frame"),
        "truncated": (half[: len(half) // 2], 400, "truncated"),
        "huge resolution": (
            encode_clip([np.zeros((1000, 1000, 3), np.uint8)] * 2, "mpeg4", quality=31),
            413,
            "1000x1000",
        ),
        "100-hour header": (
            encode_clip(
                noise_frames(3), "libx264", pts=[0, 1000, hours], container_format="matroska"
            ),
            400,
            "lasts 360000",
        ),
        "too many frames": (
            encode_clip(noise_frames(1100, size=16), "mpeg4", fps=100, quality=31),
            400,
            "frames",
        ),
        "over the byte limit": (np.random.default_rng(0).bytes(5 * 1024 * 1024), 413, "limit"),
    }


def test_hostile_clips_get_a_clear_4xx_in_time_and_leave_nothing(http, store, service):
    before = count_predictions(store)
    deadline = float(SERVICE_VIDEO_LIMITS["DEEPFAKENET_VIDEO_DEADLINE_S"])
    for name, (data, status, says) in _hostile_clips().items():
        start = time.monotonic()
        response = post_video(http, data)
        took = time.monotonic() - start
        assert response.status_code == status, (name, response.status_code, response.text)
        assert says in error_of(response), (name, error_of(response))
        assert took < deadline, f"{name}: answered after {took:.1f} s"
        assert http.get("/readyz").status_code == 200, f"the server died on {name}"
    assert count_predictions(store) == before, "a refused upload leaves no record"
    assert (
        http.post("/predict_video", files={"image": ("x.mp4", b"x", "video/mp4")}).status_code
        == 400
    )
