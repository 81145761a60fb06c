"""Clients that do not play along: malformed, slow, stalled, unauthorised, or calling internals.

Unit tests drive the upload guard (:mod:`serving.guard`) in process with small fake apps; the
end-to-end tests run a second real ``bentoml serve`` with a short read timeout and a feedback
token, and a third one that is stopped with SIGTERM while 20 clients hold connections open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image
from pydantic import SecretStr, ValidationError

from deepfakenet.service_client import ServiceClient, ServiceRejectedError
from deepfakenet.settings import DashboardSettings
from serving.clients import AccessLogPseudonymiser, ClientKeyer, load_or_create_salt
from serving.guard import INPROCESS_CLIENT, UploadGuard, error_reason
from serving.openapi import document_service
from serving.schemas import ScoreItem
from tests.conftest import (
    RunningService,
    TrainedRegistry,
    import_to_bentoml,
    start_service,
    stop_service,
)

NETWORK_CLIENT = ("203.0.113.9", 40000)
PHOTO = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8))


def png(img: Image.Image = PHOTO) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart body and its content type, as httpx would send them."""
    request = httpx.Request("POST", "http://x/", files=fields)
    return request.read(), request.headers["content-type"]


# ----------------------------------------------------------------- the guard, in process


async def echo_app(scope, receive, send) -> None:
    """A stand-in for BentoML: reads the body and answers 200 with its length."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"n": len(body)}).encode()})


def answering(status: int, body: bytes, content_type: bytes = b"application/json"):
    """A stand-in app that answers every request with ``status`` and ``body``."""

    async def app(scope, receive, send) -> None:
        headers = [(b"content-type", content_type), (b"allow", b"POST")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def guard(app=echo_app, **options) -> UploadGuard:
    settings = dict(
        max_bytes=100_000,
        routes={"/predict": set(), "/explain": {"target"}},
        json_routes={"/feedback": 4096},
        read_timeout_s=0.5,
        internal_routes=frozenset({"/infer"}),
    )
    settings.update(options)
    return UploadGuard(app, **settings)


def call(app, method: str, path: str, client=NETWORK_CLIENT, **kwargs) -> httpx.Response:
    async def in_starlette(scope, receive, send) -> None:
        # Under BentoML the guard runs inside a Starlette app, which sets scope["app"]; that
        # turns Starlette's own form parse errors into HTTPException, so the tests set it too.
        await app({**scope, "app": app}, receive, send)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=in_starlette, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize("route", ["/predict", "/explain"])
def test_multipart_without_boundary_or_body_gets_400_not_an_exception(route):
    # Today Starlette's form parser raises inside the guard; under BentoML that hung the request
    # for the whole traffic timeout and held uvicorn's graceful shutdown.
    body, content_type = multipart({"image": ("a.png", png(), "image/png")})
    for headers, content in (
        ({"content-type": "multipart/form-data"}, b""),
        ({"content-type": "multipart/form-data"}, body),
        ({"content-type": content_type}, b""),
        ({"content-type": content_type}, body[: len(body) // 2]),  # truncated
        ({"content-type": content_type}, body[:-20]),  # no closing boundary
    ):
        response = call(guard(), "POST", route, headers=headers, content=content)
        assert response.status_code == 400, (headers, len(content), response.text)
        assert set(response.json()) == {"error"}


def test_a_stalled_body_gets_408_within_the_read_timeout():
    async def stalled():
        yield b"--xyz\r\n"
        await asyncio.sleep(3600)

    started = time.monotonic()
    response = call(
        guard(read_timeout_s=0.3),
        "POST",
        "/predict",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
        content=stalled(),
    )
    assert response.status_code == 408 and "within 0.3 s" in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert time.monotonic() - started < 5


def test_an_exception_before_the_answer_becomes_a_500_in_the_one_schema():
    async def broken(scope, receive, send) -> None:
        raise RuntimeError("boom")

    for path in ("/model", "/predict"):
        body, content_type = multipart({"image": ("a.png", png(), "image/png")})
        response = call(
            guard(broken), "POST", path, headers={"content-type": content_type}, content=body
        )
        assert response.status_code == 500 and response.json() == {"error": "internal server error"}


@pytest.mark.parametrize(
    ("status", "body", "content_type", "reason"),
    [
        (400, b'[{"error": "empty body"}]', b"application/json", "empty body"),  # BentoML 4xx
        (
            400,
            b'{"error": "1 validation error for Input", "detail": [{"loc": ["label"], '
            b'"msg": "Input should be \'real\' or \'fake\'", "type": "literal_error"}]}',
            b"application/json",
            "label: Input should be 'real' or 'fake'",
        ),
        (401, b'{"detail": "a valid admin bearer token is required"}', b"application/json", None),
        (
            422,
            b'{"detail": [{"loc": ["header", "authorization"], "msg": "bad"}]}',
            b"application/json",
            "header.authorization: bad",
        ),
        (405, b"Method Not Allowed", b"text/plain; charset=utf-8", "Method Not Allowed"),
        (404, b"", b"text/plain", "Not Found"),
    ],
)
def test_every_error_body_is_rewritten_to_the_one_schema(status, body, content_type, reason):
    response = call(guard(answering(status, body, content_type)), "POST", "/model")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["allow"] == "POST", "other headers are kept"
    expected = reason or "a valid admin bearer token is required"
    assert response.json() == {"error": expected}


def test_successful_answers_pass_untouched():
    response = call(guard(answering(200, b"[1, 2]")), "GET", "/model")
    assert response.status_code == 200 and response.content == b"[1, 2]"


def test_internal_routes_answer_404_to_the_network_only():
    app = guard()
    assert call(app, "POST", "/infer", json={"items": []}).status_code == 404
    assert call(app, "GET", "/infer").json() == {"error": "Not Found"}
    inside = call(app, "POST", "/infer", client=INPROCESS_CLIENT, json={"items": []})
    assert inside.status_code == 200
    # uvicorn rewrites the client from X-Forwarded-For for trusted peers (host:port included):
    # a request carrying the header never counts as internal.
    forged = call(
        app,
        "POST",
        "/infer",
        client=INPROCESS_CLIENT,
        headers={"x-forwarded-for": "127.0.0.1:123"},
        json={"items": []},
    )
    assert forged.status_code == 404


def test_a_bearer_route_refuses_a_missing_or_wrong_token_before_reading_the_body():
    app = guard(bearer_tokens={"/feedback": "s3cret"})
    payload = {"prediction_id": "x", "label": "fake"}
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "s3cret"}):
        response = call(app, "POST", "/feedback", headers=headers, json=payload)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in response.json()["error"]
    ok = call(app, "POST", "/feedback", headers={"authorization": "Bearer s3cret"}, json=payload)
    assert ok.status_code == 200
    assert call(app, "POST", "/explain", json=payload).status_code == 400, "other routes: no token"


def test_error_reason_falls_back_to_the_status_phrase():
    assert error_reason(503, b"{}") == "Service Unavailable"
    assert error_reason(599, b"") == "Error"


# --------------------------------------------------------------- payloads and documents


def test_score_items_are_fully_validated_base64_included():
    crop = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    text = base64.b64encode(crop.tobytes()).decode()
    good = ScoreItem.model_validate({"pixels": text, "shape": [3, 8, 8]})
    assert np.array_equal(good.to_array(), crop)
    # Right length, wrong alphabet: accepted before, so it failed the whole merged batch later.
    for bad in ("!" * len(text), text[:-4] + "AA==", "=" * len(text)):
        with pytest.raises(ValidationError, match="pixels"):
            ScoreItem.model_validate({"pixels": bad, "shape": [3, 8, 8]})
    # A float32 tensor (the old, four times larger payload) is the wrong length for uint8.
    floats = base64.b64encode(crop.astype(np.float32).tobytes()).decode()
    with pytest.raises(ValidationError, match="3 x height x width bytes"):
        ScoreItem.model_validate({"pixels": floats, "shape": [3, 8, 8]})


def test_the_document_has_one_error_schema_required_bodies_and_no_internal_route():
    spec = {
        "paths": {
            "/infer": {"post": {"responses": {200: {}, 400: {}}}},
            "/predict": {
                "post": {
                    "responses": {200: {"description": "ok"}, 400: {}, 404: {}},
                    "requestBody": {
                        "content": {"multipart/form-data": {"schema": {"type": "object"}}}
                    },
                }
            },
            "/feedback": {"post": {"responses": {200: {}}, "requestBody": {"content": {}}}},
        },
        "components": {"schemas": {"InvalidArgument": {}, "ScoreItem": {}}},
    }
    doc = document_service(spec, internal_routes={"/infer"}, bearer_routes={"/feedback"})
    assert "/infer" not in doc["paths"] and set(doc["components"]["schemas"]) == {"Error"}
    predict = doc["paths"]["/predict"]["post"]
    assert sorted(map(str, predict["responses"])) == [
        "200",
        "400",
        "408",
        "413",
        "500",
        "503",
        "504",
    ]
    refs = {
        r["content"]["application/json"]["schema"]["$ref"]
        for s, r in predict["responses"].items()
        if str(s) != "200"
    }
    assert refs == {"#/components/schemas/Error"}
    assert predict["requestBody"]["required"] is True
    form = predict["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["additionalProperties"] is False
    assert "image/png" in form["encoding"]["image"]["contentType"]
    feedback = doc["paths"]["/feedback"]["post"]
    assert "401" in feedback["responses"] and feedback["security"] == [{"bearerToken": []}]
    assert doc["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert spec["paths"]["/infer"], "the input is not modified"


def test_client_keys_are_keyed_hashes_with_a_private_stable_salt(tmp_path):
    path = tmp_path / "home" / "client_key.salt"
    salt = load_or_create_salt(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_salt(path) == salt, "stable across restarts"
    key = ClientKeyer(salt).key("198.51.100.7")
    assert key == hmac.new(salt, b"198.51.100.7", hashlib.sha256).hexdigest()[:32]
    assert "198" not in key and len(key) == 32
    assert ClientKeyer(salt).key("198.51.100.8") != key
    assert ClientKeyer(b"other").key("198.51.100.7") != key
    assert ClientKeyer(salt).key(None) is None
    assert "salt" in repr(ClientKeyer(salt)) and salt.decode() not in repr(ClientKeyer(salt))


def test_the_dashboard_client_sends_the_feedback_token_only_when_configured():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"feedback_id": "f"})

    transport = httpx.MockTransport(handler)
    with_token = DashboardSettings(feedback_token=SecretStr("t0k"))
    ServiceClient.from_settings(with_token, transport=transport).feedback("p", "fake")
    without = DashboardSettings(feedback_token=None)
    ServiceClient.from_settings(without, transport=transport).feedback("p", "fake")
    assert seen == ["Bearer t0k", None]
    assert "t0k" not in repr(ServiceClient.from_settings(with_token))


# ------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory, trained_registry: TrainedRegistry) -> Path:
    """A BentoML home with the session's champion, shared by this module's servers."""
    home = tmp_path_factory.mktemp("hostile") / "bentoml"
    import_to_bentoml(trained_registry, home)
    return home


FEEDBACK_TOKEN = "tok-" + "x" * 28


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, hostile_home: Path) -> Iterator[RunningService]:
    """A server with a feedback token and a 2 s read timeout (the defaults are open and 30 s)."""
    running = start_service(
        tmp_path_factory.mktemp("guarded"),
        hostile_home,
        {
            "DEEPFAKENET_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
            "DEEPFAKENET_REQUEST_READ_TIMEOUT_S": "2",
        },
    )
    yield running
    stop_service(running)


def raw_request(
    url: str, head: bytes, body: bytes = b"", wait_s: float = 10.0
) -> tuple[int, float]:
    """Send bytes over a plain socket, keep it open, and return (status, seconds to answer)."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head + body)
        answer = sock.recv(65536)
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("route", ["/predict", "/features", "/explain"])
def test_malformed_and_stalled_uploads_get_a_4xx_quickly(guarded, route):
    body, content_type = multipart({"image": ("a.png", png(), "image/png")})
    cases = {
        # The curl: no boundary, no body (hung for the traffic timeout before).
        "no boundary, no body": (b"multipart/form-data", b"", None, 400),
        "no boundary": (b"multipart/form-data", body, len(body), 400),
        "empty body": (content_type.encode(), b"", 0, 400),
        "truncated": (content_type.encode(), body[: len(body) // 2], len(body) // 2, 400),
        # Declares the whole body, sends half, then stalls: 408 after the 2 s read timeout.
        "stalled": (content_type.encode(), body[: len(body) // 2], len(body), 408),
    }
    for name, (ctype, content, length, status) in cases.items():
        head = f"POST {route} HTTP/1.1\r\nHost: t\r\n".encode() + b"Content-Type: " + ctype
        if length is not None:
            head += f"\r\nContent-Length: {length}".encode()
        got, seconds = raw_request(guarded.url, head + b"\r\n\r\n", content)
        assert got == status, (name, got)
        assert seconds < 6, (name, seconds)


@pytest.mark.integration
@pytest.mark.slow
def test_feedback_needs_the_token_when_one_is_set(guarded):
    with httpx.Client(base_url=guarded.url, timeout=60) as http:
        pred = http.post("/predict", files={"image": ("a", png(), "image/png")})
        assert pred.status_code == 200, pred.text
        payload = {"prediction_id": pred.json()["prediction_id"], "label": "fake"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = http.post("/feedback", json=payload, headers=headers)
            assert refused.status_code == 401 and set(refused.json()) == {"error"}
            assert refused.headers["www-authenticate"] == "Bearer"
        ok = http.post(
            "/feedback", json=payload, headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
        )
        assert ok.status_code == 200, ok.text
        doc = http.get("/docs.json").json()
    assert "401" in doc["paths"]["/feedback"]["post"]["responses"]
    assert doc["paths"]["/feedback"]["post"]["security"] == [{"bearerToken": []}]

    settings = DashboardSettings(service_url=guarded.url, feedback_token=SecretStr(FEEDBACK_TOKEN))
    assert ServiceClient.from_settings(settings).feedback(payload["prediction_id"], "real")
    with pytest.raises(ServiceRejectedError) as refused_err:
        ServiceClient(guarded.url).feedback(payload["prediction_id"], "real")
    assert refused_err.value.status_code == 401


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_stops_the_server_within_seconds_despite_20_stuck_clients(
    tmp_path, hostile_home: Path
):
    # Default read timeout (30 s): the stalled bodies outlast the graceful-shutdown timeout, so
    # that timeout (conftest's --timeout-graceful-shutdown, as `make serve`) is what ends them.
    running = start_service(tmp_path / "doomed", hostile_home)
    host, port = running.url.removeprefix("http://").split(":")
    body, content_type = multipart({"image": ("a.png", png(), "image/png")})
    sockets: list[socket.socket] = []
    stop = threading.Event()
    try:
        for i in range(8):  # slow bodies: four stalled, four trickling a byte every 0.3 s
            sock = socket.create_connection((host, int(port)))
            route = ("/predict", "/features", "/explain", "/predict")[i % 4]
            sock.sendall(
                f"POST {route} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:100]
            )
            sockets.append(sock)
        for _ in range(6):  # idle keep-alive connections after a finished request
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
            sock.recv(4096)
            sockets.append(sock)
        for _ in range(6):  # request headers that never end
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")
            sockets.append(sock)

        def trickle() -> None:
            while not stop.is_set():
                for sock in sockets[4:8]:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"x")
                time.sleep(0.3)

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1.0)
        assert running.process.poll() is None
        # BentoML's arbiter starts its worker in a session of its own: watch both.
        server = psutil.Process(running.process.pid)
        processes = [server, *server.children(recursive=True)]
        assert len(processes) >= 2, processes
        started = time.monotonic()
        os.killpg(running.process.pid, signal.SIGTERM)
        running.process.wait(timeout=30)
        _, alive = psutil.wait_procs(processes, timeout=30)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        stop_service(running)
    print(f"SIGTERM -> all server processes gone: {seconds:.2f} s, {len(sockets)} stuck clients")
    assert not alive, alive
    assert seconds <= 10, f"SIGTERM took {seconds:.1f} s with {len(sockets)} stuck clients"
    log = running.log_tail(20000)
    assert "timeout graceful shutdown exceeded" in log, log[-3000:]


@pytest.mark.integration
@pytest.mark.slow
def test_a_bad_batch_item_from_outside_cannot_fail_innocent_requests(service):
    tensor = np.zeros((3, 32, 32), dtype=np.float32)
    right_length_bad = {
        "tensor": "!" * len(base64.b64encode(tensor.tobytes())),
        "shape": [3, 32, 32],
    }
    data = png()

    def predict(_: int) -> int:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            return http.post("/predict", files={"image": ("a", data, "image/png")}).status_code

    def poison(_: int) -> int:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            return http.post("/infer", json={"items": [right_length_bad] * 4}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        good = pool.map(predict, range(24))
        bad = pool.map(poison, range(12))
        good_codes, bad_codes = list(good), list(bad)
    assert good_codes == [200] * 24, good_codes
    assert bad_codes == [404] * 12, "the batch route is not reachable from outside"


def test_the_access_log_names_the_client_by_its_key_not_its_address(caplog):
    keyer = ClientKeyer(b"salt")
    logger = logging.getLogger("bentoml.access.test")
    logger.addFilter(AccessLogPseudonymiser(keyer))
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("%s (%s) (%s) %.3fms", "198.51.100.7:5123", "method=POST", "status=200", 1.0)
    assert caplog.messages == [
        f"client={keyer.key('198.51.100.7')} (method=POST) (status=200) 1.000ms"
    ]


def test_an_exception_after_an_error_start_still_gets_the_one_schema():
    async def half(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        raise RuntimeError("died before the body")

    response = call(guard(half), "GET", "/model")
    assert response.status_code == 500 and response.json() == {"error": "internal server error"}


def test_an_expensive_route_takes_a_bounded_number_of_uploads_and_refuses_more_at_once():
    """Past ``max_concurrent`` uploads in progress, the next gets 503 + Retry-After before its
    body is read; a slot frees when a request ends, and other routes are never limited."""
    release = asyncio.Event()
    started = 0

    async def slow_app(scope, receive, send) -> None:
        nonlocal started
        started += 1
        await release.wait()
        await echo_app(scope, receive, send)

    app = guard(
        slow_app,
        routes={"/predict": set(), "/predict_video": set()},
        file_fields={"/predict_video": "video"},
        max_concurrent={"/predict_video": 2},
        read_timeouts={"/predict_video": 5.0},
    )
    body, content_type = multipart({"video": ("v.mp4", b"\x00" * 100, "video/mp4")})
    headers = {"content-type": content_type}

    async def post(path: str, client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(path, headers=headers, content=body)

    async def go() -> list[int]:
        async def in_starlette(scope, receive, send) -> None:
            await app({**scope, "app": app}, receive, send)

        transport = httpx.ASGITransport(app=in_starlette, client=NETWORK_CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = [asyncio.create_task(post("/predict_video", http)) for _ in range(2)]
            while started < 2:
                await asyncio.sleep(0.01)
            refused = await post("/predict_video", http)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5" and "try again" in refused.json()["error"]
            image_body, image_type = multipart({"image": ("a.png", png(), "image/png")})
            other = asyncio.create_task(
                http.post("/predict", headers={"content-type": image_type}, content=image_body)
            )
            while started < 3:  # the image route is not limited
                await asyncio.sleep(0.01)
            release.set()
            statuses = [r.status_code for r in await asyncio.gather(*first, other)]
            again = await post("/predict_video", http)  # the slots are free again
            return [*statuses, again.status_code]

    assert asyncio.run(go()) == [200, 200, 200, 200]
