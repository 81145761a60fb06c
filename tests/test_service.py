"""The real BentoML service over HTTP: every route, the records it leaves, bad input, concurrency.

One ``bentoml serve`` subprocess per session (``service`` fixture) serves the model trained in
the session. Clients are BentoML's own ``SyncHTTPClient`` and plain ``httpx`` multipart.
"""

import base64
import hashlib
import hmac
import io
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from bentoml.exceptions import BentoMLException
from PIL import Image

from deepfakenet.features import feature_matrix, read_features
from deepfakenet.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RNG = np.random.default_rng(7)
PHOTO = Image.fromarray(RNG.integers(0, 255, (80, 96, 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def post_image(client: httpx.Client, route: str, data: bytes, **fields) -> httpx.Response:
    return client.post(route, files={"image": ("upload.bin", data, "image/png")}, data=fields)


def error_of(response: httpx.Response) -> str:
    """The reason of an error answer, checking it has the service's one error schema."""
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def wait_for(condition, message: str, seconds: float = 10) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


@pytest.fixture
def http(service) -> httpx.Client:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


@pytest.fixture
def store(service) -> Store:
    store = Store(service.store_url, create=False)
    yield store
    store.close()


def test_bentoml_client_predict_explain_features_feedback(service, tmp_path, store):
    path = tmp_path / "photo.png"
    PHOTO.save(path)
    with bentoml.SyncHTTPClient(service.url, server_ready_timeout=30) as client:
        pred = client.predict(image=path)
        explanation = client.explain(image=path, target="fake")
        feats = client.features(image=path)
        feedback = client.feedback(prediction_id=pred["prediction_id"], label="real", comment="ok")

    assert pred["label"] in {"real", "fake"} and 0 <= pred["prob_fake"] <= 1
    assert pred["model_version"] == "1"
    # One model, one preprocessing: the three routes score the same image identically.
    assert explanation["prob_fake"] == pytest.approx(pred["prob_fake"], abs=1e-5)
    assert explanation["label"] == pred["label"] and explanation["target"] == "fake"
    assert len(feats["features"]) == 512 and all(np.isfinite(feats["features"]))

    record = store.get_prediction(pred["prediction_id"])
    assert record.prob_fake == pytest.approx(pred["prob_fake"])
    assert (record.width, record.height, record.format) == (96, 80, "PNG")
    assert record.endpoint == "predict" and record.model_version == "1"
    rows = store.feedback_frame()
    row = rows[rows["feedback_id"] == feedback["feedback_id"]].iloc[0]
    assert (row["human_label"], row["comment"], row["prediction_id"]) == (
        "real",
        "ok",
        pred["prediction_id"],
    )


def test_explain_returns_a_heatmap_and_the_cam(http, service):
    response = post_image(http, "/explain", encode(PHOTO))
    assert response.status_code == 200, response.text
    body = response.json()
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    crop = httpx.get(f"{service.url}/model").json()["input_size"]
    assert heat.size == (crop, crop) and heat.mode == "RGB"
    cam = np.asarray(body["cam"])
    side = -(-crop // 32)  # layer4 has stride 32
    assert cam.shape == (side, side) and cam.min() >= 0 and cam.max() <= 1
    assert body["target"] == body["label"], "by default the predicted class is explained"
    assert body["layer"] == "layer4"


def test_model_route_reports_the_registry_labels(http, trained_registry):
    info = http.get("/model").json()
    assert info["model_name"] == "deepfakenet" and info["model_version"] == "1"
    assert info["alias"] == "champion" and info["run_id"] == trained_registry.run_id
    assert info["data_version"] == "untracked"  # the tiny test tree is not DVC-tracked
    assert info["input_size"] == trained_registry.crop_size
    assert 0 < info["threshold"] < 1 and info["temperature"] > 0 and "logit_bias" in info


def test_the_service_scores_with_the_registered_calibration_and_threshold(
    http, trained_registry, tmp_path
):
    # One code path: the served answer is the backend /model names, run on the shared
    # preprocessing, calibrated with the registered net's temperature and offset, and decided at
    # its stored threshold. (How close int8 stays to torch is the parity check's business,
    # measured on test-split photos in test_export.py, not on noise.)
    import torch

    from deepfakenet import registry
    from deepfakenet.backends import load_backend
    from deepfakenet.inference import scores_from_outputs
    from deepfakenet.preprocessing import preprocess

    registry.use(registry.RegistryConfig(trained_registry.tracking_uri))
    model_dir, _ = registry.download_model("deepfakenet", "champion", tmp_path)
    net = registry.load_net_from_dir(model_dir)
    info = http.get("/model").json()
    # `auto`: the fastest artifact that passed its parity check on the test split.
    assert info["requested"] == "auto" and info["onnx_parity"]["passed"] is True, info
    assert info["backend"] == ("onnx-int8" if info["int8_parity"]["passed"] else "onnx"), info
    backend, _ = load_backend(model_dir, net, info["backend"])
    images = [Image.fromarray(RNG.integers(0, 255, (52, 44, 3), dtype=np.uint8)) for _ in range(6)]
    batch = preprocess(images, net.crop_size)
    logits, features = backend.run(batch.numpy())
    scores = scores_from_outputs(net, torch.from_numpy(logits), torch.from_numpy(features))
    for image, prob, label in zip(images, scores.prob_fake.tolist(), scores.labels, strict=True):
        pred = post_image(http, "/predict", encode(image)).json()
        assert pred["prob_fake"] == pytest.approx(prob, abs=1e-4)
        assert pred["label"] == label
    assert info["threshold"] == pytest.approx(float(net.threshold))


def test_every_prediction_leaves_a_record_features_and_an_archived_image(http, service, store):
    image = Image.fromarray(RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera make: must not survive into the archive
    data = encode(image, "JPEG", exif=exif)
    ids = [
        post_image(http, route, data).json()["prediction_id"]
        for route in ("/predict", "/explain", "/features")
    ]
    records = [store.get_prediction(i) for i in ids]
    assert [r.endpoint for r in records] == ["predict", "explain", "features"]
    assert len({r.sha256 for r in records}) == 1

    # Images are archived by a background thread (deepfakenet.recording): within moments.
    archived = service.home / "images" / records[0].sha256[:2] / f"{records[0].sha256}.png"
    wait_for(archived.is_file, "the image was not archived")
    with Image.open(archived) as kept:
        assert kept.format == "PNG" and not kept.getexif() and kept.size == (40, 40)

    deadline = time.monotonic() + 10  # features are flushed every 0.5 s in the test server
    while time.monotonic() < deadline:
        frame = read_features(service.home / "features")
        if set(ids) <= set(frame["prediction_id"]):
            break
        time.sleep(0.2)
    rows = frame.set_index("prediction_id").loc[ids]
    assert (rows["model_version"] == "1").all()
    assert feature_matrix(rows.reset_index()).shape == (3, 512)
    assert (
        sorted(p.parent.name[:5] for p in (service.home / "features").glob("*/*.parquet"))[0]
        == "date="
    )
    # Nothing identifying is stored: the schema has no place for a name, an address or EXIF.
    columns = set(
        sa.inspect(store.engine).get_columns("predictions")[i]["name"]
        for i in range(len(sa.inspect(store.engine).get_columns("predictions")))
    )
    assert not columns & {"filename", "file_name", "client_ip", "ip", "exif", "user_agent"}


@pytest.mark.parametrize(
    ("name", "image", "fmt"),
    [
        ("rgba", PHOTO.convert("RGBA"), "PNG"),
        ("palette", PHOTO.convert("P"), "PNG"),
        ("cmyk", PHOTO.convert("CMYK"), "JPEG"),
        ("grey", PHOTO.convert("L"), "PNG"),
        ("16-bit", Image.fromarray((RNG.random((50, 60)) * 65535).astype(np.uint16)), "PNG"),
        ("webp", PHOTO, "WEBP"),
        ("tiny", PHOTO.resize((5, 7)), "PNG"),
    ],
)
def test_odd_modes_and_formats_are_scored(http, name, image, fmt):
    response = post_image(http, "/predict", encode(image, fmt))
    assert response.status_code == 200, (name, response.text)


def test_exif_orientation_and_animation(http, store):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees on display
    response = post_image(http, "/predict", encode(PHOTO, "JPEG", exif=exif))
    record = store.get_prediction(response.json()["prediction_id"])
    assert (record.width, record.height) == (80, 96), "orientation applied before scoring"

    frames = [PHOTO, PHOTO.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    response = post_image(http, "/predict", buf.getvalue())
    assert (
        response.status_code == 200
        and store.get_prediction(response.json()["prediction_id"]).format == "GIF"
    )


def _bomb() -> bytes:
    return encode(Image.new("L", (3000, 3000)), "PNG")  # 9 Mpx, a few KB compressed


@pytest.mark.parametrize(
    ("route", "files", "status", "reason"),
    [
        (
            "/predict",
            {"image": ("a.txt", b"hello, not an image", "text/plain")},
            400,
            "not an image",
        ),
        (
            "/predict",
            {"image": ("a.png", encode(PHOTO)[:80], "image/png")},
            400,
            "truncated|corrupt",
        ),
        (
            "/explain",
            {"image": ("a.jpg", encode(PHOTO, "JPEG")[:300], "image/jpeg")},
            400,
            "truncated|corrupt",
        ),
        ("/predict", {"image": ("a.png", b"", "image/png")}, 400, "empty"),
        ("/features", {"image": ("a.png", _bomb(), "image/png")}, 413, "pixels"),
        ("/predict", {"other": ("a.png", encode(PHOTO), "image/png")}, 400, "field 'image'"),
        # BentoML names its temp file after the upload: a name the file system refuses was a 500.
        ("/predict", {"image": ("a" * 300 + ".png", encode(PHOTO), "image/png")}, 400, "name"),
        ("/explain", {"image": ("é" * 130 + ".png", encode(PHOTO), "image/png")}, 400, "name"),
        # A PNG labelled as JPEG is decoded by its bytes, not by the label.
        ("/predict", {"image": ("a.jpg", encode(PHOTO), "image/jpeg")}, 200, None),
    ],
)
def test_bad_uploads_get_clear_4xx(http, route, files, status, reason):
    response = http.post(route, files=files)
    assert response.status_code == status, response.text
    if reason:
        import re

        assert re.search(reason, error_of(response)), error_of(response)


def test_over_the_byte_limit_is_refused_before_reading(http):
    big = RNG.integers(0, 255, (1200, 1200, 3), dtype=np.uint8)  # ~4.3 MB as PNG, limit is 2 MiB
    response = post_image(http, "/predict", encode(Image.fromarray(big)))
    assert response.status_code == 413 and "over the limit" in error_of(response)
    assert http.post("/predict", content=b"").status_code == 400  # empty body

    def chunks():  # no Content-Length: the guard counts what arrives
        for _ in range(40):
            yield b"x" * 65536

    chunked = http.post(
        "/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert chunked.status_code == 413 and "over the limit" in error_of(chunked)


def test_feedback_errors(http, service):
    pred = post_image(http, "/predict", encode(PHOTO)).json()
    unknown = http.post("/feedback", json={"prediction_id": "0" * 32, "label": "fake"})
    assert unknown.status_code == 404 and "no prediction" in error_of(unknown)
    bad_label = http.post("/feedback", json={"prediction_id": pred["prediction_id"], "label": "x"})
    assert bad_label.status_code == 400
    assert error_of(bad_label) == "label: Input should be 'real' or 'fake'"
    too_long = http.post(
        "/feedback",
        json={"prediction_id": pred["prediction_id"], "label": "real", "comment": "x" * 5000},
    )
    assert too_long.status_code == 400 and "comment" in error_of(too_long)
    odd_id = http.post("/feedback", json={"prediction_id": "x\u0000", "label": "real"})
    assert odd_id.status_code == 400 and "prediction_id" in error_of(odd_id)
    nul = http.post(
        "/feedback",
        json={"prediction_id": pred["prediction_id"], "label": "real", "comment": "a\u0000b"},
    )
    assert nul.status_code == 400 and "comment" in error_of(nul)  # refused by the schema
    missing = http.post("/feedback", json={"label": "real"})
    assert missing.status_code == 400 and "prediction_id: Field required" in error_of(missing)
    with bentoml.SyncHTTPClient(service.url) as client, pytest.raises(BentoMLException):
        client.feedback(prediction_id="missing", label="real")


def test_concurrent_clients_lose_no_record_and_share_batches(service, store):
    images = [
        encode(Image.fromarray(RNG.integers(0, 255, (48, 48, 3), dtype=np.uint8)))
        for _ in range(48)
    ]

    def score_and_correct(data: bytes) -> tuple[str, str]:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            pred = post_image(client, "/predict", data)
            pred.raise_for_status()
            pid = pred.json()["prediction_id"]
            fb = client.post("/feedback", json={"prediction_id": pid, "label": "fake"})
            fb.raise_for_status()
            return pid, fb.json()["feedback_id"]

    before = len(store.predictions_frame())
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(score_and_correct, images))
    pred_ids = {p for p, _ in results}
    feedback_ids = {f for _, f in results}
    assert len(pred_ids) == len(feedback_ids) == len(images)
    predictions = store.predictions_frame()
    assert len(predictions) == before + len(images)
    assert pred_ids <= set(predictions["id"])
    assert feedback_ids <= set(store.feedback_frame()["feedback_id"])
    shas = set(predictions.loc[predictions["id"].isin(pred_ids), "sha256"])
    assert len(shas) == len(images)
    wait_for(
        lambda: all((service.home / "images" / sha[:2] / f"{sha}.png").is_file() for sha in shas),
        "not every scored image was archived",
    )
    deadline = time.monotonic() + 10
    while not pred_ids <= set(read_features(service.home / "features")["prediction_id"]):
        assert time.monotonic() < deadline, "feature rows missing after the flush interval"
        time.sleep(0.2)

    # Adaptive batching merged concurrent requests: some batch held more than one image.
    metrics = httpx.get(f"{service.url}/metrics").text
    sizes = [
        line
        for line in metrics.splitlines()
        if line.startswith("bentoml_service_adaptive_batch_size_bucket")
        and 'method_name="infer"' in line
    ]
    assert sizes, metrics[:2000]
    single = next(float(x.rsplit(" ", 1)[1]) for x in sizes if 'le="1.0"' in x)
    total = next(float(x.rsplit(" ", 1)[1]) for x in sizes if 'le="+Inf"' in x)
    assert total > single, "every batch had one image: requests were not batched"


def test_openapi_documents_every_route(http):
    spec = http.get("/docs.json").json()
    for route in ("/predict", "/explain", "/features", "/feedback", "/model"):
        assert route in spec["paths"], sorted(spec["paths"])
    assert "/infer" not in spec["paths"], "the internal batch route is not published"
    for probe in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert http.get(probe).status_code == 200, probe


def test_reload_needs_the_admin_token_and_is_off_without_it(http):
    # The session server runs without DEEPFAKENET_ADMIN_TOKEN: the route says it is off, in the
    # one error schema (FastAPI's own would be {"detail": ...}) and as documented.
    response = http.post("/admin/reload")
    assert response.status_code == 404 and "not enabled" in error_of(response)
    spec = http.get("/docs.json").json()
    assert "404" in spec["paths"]["/admin/reload"]["post"]["responses"]


def test_image_field_must_carry_a_file(http, service):
    # BentoML would fetch a URL given as text in a file field; the guard refuses it first.
    for value in (f"{service.url}/livez", str(Path(__file__))):
        response = http.post("/predict", data={"image": value}, files={"x": ("", b"", "")})
        assert response.status_code == 400, response.text
        assert "must be a file upload" in error_of(response), error_of(response)
    as_json = http.post("/predict", json={"image": str(Path(__file__))})
    assert as_json.status_code == 400 and "multipart" in error_of(as_json)
    two = http.post(
        "/predict",
        files=[("image", ("a.png", encode(PHOTO), "image/png"))] * 2,
    )
    assert two.status_code == 400 and "exactly one file" in error_of(two)
    extra = http.post(
        "/explain",
        files={"image": ("a.png", encode(PHOTO), "image/png")},
        data={"target": "fake", "debug": "1"},
    )
    assert extra.status_code == 400 and "debug" in error_of(extra)


def test_internal_batch_api_is_not_reachable_from_outside(http):
    # `infer` is called by the service itself, in process; from the network it does not exist
    # (its item validation, base64 included, is unit-tested in test_hostile_clients.py).
    pixels = np.zeros((3, 32, 32), dtype=np.uint8)
    good = {"pixels": base64.b64encode(pixels.tobytes()).decode(), "shape": [3, 32, 32]}
    for method, kwargs in (("POST", {"json": {"items": [good]}}), ("GET", {})):
        response = http.request(method, "/infer", **kwargs)
        assert response.status_code == 404, (method, response.text)
        assert error_of(response) == "Not Found"
    forged = http.post(
        "/infer", json={"items": [good]}, headers={"X-Forwarded-For": "127.0.0.1:123"}
    )
    assert forged.status_code == 404


def test_a_prediction_stores_a_stable_keyed_hash_of_the_client_not_its_address(
    http, service, store
):
    ids = [post_image(http, "/predict", encode(PHOTO)).json()["prediction_id"] for _ in range(2)]
    # X-Forwarded-For is not trusted (no proxy is configured): it cannot change the key.
    spoofed = http.post(
        "/features",
        files={"image": ("upload.bin", encode(PHOTO), "image/png")},
        headers={"X-Forwarded-For": "198.51.100.23"},
    )
    ids.append(spoofed.json()["prediction_id"])
    keys = {store.get_prediction(i).client_key for i in ids}
    assert len(keys) == 1, keys
    (key,) = keys
    salt_file = service.home / "client_key.salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    salt = salt_file.read_text().strip().encode()
    assert key == hmac.new(salt, b"127.0.0.1", hashlib.sha256).hexdigest()[:32]
    assert "127.0.0.1" not in key and "198.51" not in key
    access = [
        line
        for line in service.log_tail(1_000_000).splitlines()
        if "method=POST,path=/predict" in line
    ]
    assert access, "the access log has the requests"
    assert all("127.0.0.1" not in line and "client=" in line for line in access), access[-3:]
    assert any(f"client={key}" in line for line in access), "...named by their key instead"


def test_feedback_takes_a_small_json_body_only(http):
    pred = post_image(http, "/predict", encode(PHOTO)).json()
    form = http.post("/feedback", files={"prediction_id": ("a", b"\xff\xfe", "x/y")})
    assert form.status_code == 400 and "JSON" in error_of(form)
    huge = http.post(
        "/feedback",
        json={"prediction_id": pred["prediction_id"], "label": "real", "comment": "x" * 100_000},
    )
    assert huge.status_code == 413


def test_sustained_concurrent_load_gets_no_server_error(service):
    # More requests than BentoML's internal client serves before it replaces its session
    # (100), with many in flight when it does: none of them may turn into a 500.
    images = [
        encode(Image.fromarray(RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8)))
        for _ in range(16)
    ]

    def score(i: int) -> int:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            return post_image(client, "/predict", images[i % len(images)]).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(score, range(320)))
    assert codes.count(200) == len(codes), {c: codes.count(c) for c in set(codes)}
