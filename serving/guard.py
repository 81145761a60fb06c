"""The ASGI gate in front of the service: bounded, timely, well-formed requests; one error shape.

BentoML 1.4.40 needs a gate in front of its request handling:

* it writes a whole upload to a temporary file first (no size limit), answers 500 when an
  undeclared binary form field is sent, and *downloads a URL server-side* when a file field holds
  text instead of a file (a request forgery vector);
* its ``TimeoutMiddleware`` waits for the first byte of a response: when the app raises before
  answering (Starlette's form parser raises on a multipart body without a boundary), the request
  hangs for the whole traffic timeout with no answer, and keeps uvicorn from shutting down;
* its batchable API is a public route, although only the service's own in-process client should
  call it;
* its errors come in three shapes (``{"error"}``, ``[{"error"}]``, ``{"error", "detail": [...]}``)
  and Starlette's and FastAPI's in two more (plain text, ``{"detail"}``).

:class:`UploadGuard` reads a guarded route's body up to the route's byte limit (413 past it)
and within the read timeout (408 past it), checks it, and replays it to BentoML unchanged; it
answers 404 to network callers of internal routes, checks bearer tokens, serves the corrected
OpenAPI document, turns an exception before the answer into a 500, and rewrites every error
response into ``{"error": "<reason>"}``. Successful responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("deepfakenet.service")

#: The ASGI ``client`` of BentoML 1.4's in-process self-calls (``self.to_async.<api>``): they
#: reach the app through ``aiohttp_asgi_connector``, which hard-codes this address. A network
#: peer only has it when it binds the privileged port 123 on loopback (root on this host), or
#: when uvicorn rewrote the client from an ``X-Forwarded-For`` header, which is why a request
#: carrying that header never counts as internal.
INPROCESS_CLIENT = ("127.0.0.1", 123)
#: Longest accepted upload file name (the file system's limit is 255 bytes; BentoML adds to it).
MAX_FILENAME_BYTES = 200


def is_internal_call(scope: Scope) -> bool:
    """Whether a request comes from the service's own in-process client, not the network."""
    client = scope.get("client")
    if client is None or tuple(client) != INPROCESS_CLIENT:
        return False
    return not any(name == b"x-forwarded-for" for name, _ in scope.get("headers", ()))


def error_body(reason: str) -> bytes:
    """The one error body: ``{"error": reason}`` as JSON bytes."""
    return json.dumps({"error": reason}, ensure_ascii=False).encode("utf-8")


def _format_details(details: list[Any]) -> str:
    """Pydantic's (BentoML's, FastAPI's) list of validation errors as one line."""
    parts = []
    for item in details:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "__root__"))
            msg = str(item.get("msg", item))
            parts.append(f"{loc}: {msg}" if loc else msg)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def error_reason(status: int, body: bytes) -> str:
    """The reason carried by an error body of any shape the stack produces.

    ``{"error": str}`` (ours, BentoML's 5xx), ``[{"error": str}]`` (BentoML's 4xx),
    ``{"error": str, "detail": [...]}`` (BentoML's validation errors), ``{"detail": str|list}``
    (FastAPI), plain text (Starlette's 404/405), or nothing (the status' phrase).
    """
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    try:
        data: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text or phrase
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict):
        error, detail = data.get("error"), data.get("detail")
        if isinstance(detail, list) and detail:
            return _format_details(detail)
        for value in (error, detail):
            if isinstance(value, str) and value:
                return value
    return phrase


def _in_error_shape(data: Any) -> bool:
    """Whether a parsed body already is ``{"error": str}`` and nothing else."""
    return isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], str)


class _ErrorRewriter:
    """A ``send`` that rewrites error responses into the one schema.

    Only responses with status >= 400 are held back (their bodies are small); every other
    message goes straight through, so successful responses cost one comparison. ``started``
    tells whether anything reached the client yet (a held error start has not).
    """

    def __init__(self, send: Send, rewrite: bool) -> None:
        self._send = send
        self._rewrite = rewrite
        self.started = False
        self._held: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._rewrite and message["status"] >= 400:
                self._held = message
                return
            self.started = True
        elif kind == "http.response.body" and self._held is not None:
            self._chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._flush()
            return
        await self._send(message)

    async def _flush(self) -> None:
        start, body = self._held, b"".join(self._chunks)
        assert start is not None
        self._held, self._chunks = None, []
        status = start["status"]
        content_type = Headers(raw=start.get("headers", [])).get("content-type", "")
        try:  # already in the one shape: pass it on as it is
            data = json.loads(body) if content_type.startswith("application/json") else None
        except ValueError:
            data = None
        if not _in_error_shape(data):
            body = error_body(error_reason(status, body))
        headers = [
            (name, value)
            for name, value in start.get("headers", [])
            if name.lower() not in (b"content-length", b"content-type")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        self.started = True
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class UploadGuard:
    """ASGI middleware in front of the whole app (see the module docstring for why).

    Args:
        app: The ASGI app to protect.
        max_bytes: Largest accepted upload (multipart) body, unless ``byte_limits`` says more.
        routes: Upload route path -> names of the text fields it accepts besides its file.
        file_fields: Upload route path -> the name of its one file field (default ``image``).
        byte_limits: Upload route path -> its own body limit (e.g. a video route's).
        read_timeouts: Route path -> its own read timeout (a large upload takes longer).
        max_concurrent: Route path -> most requests in progress at once in this worker; more
            get 503 with ``Retry-After`` before their body is read (expensive routes, so that a
            few hostile uploads cannot queue every honest one past the traffic timeout).
        json_routes: Route path -> largest accepted JSON body (e.g. ``/feedback``).
        read_timeout_s: Longest time to receive a guarded route's body; slower ones get 408.
        internal_routes: Paths only the service's in-process client may call; the network gets
            404, as for a route that does not exist.
        bearer_tokens: Route path -> the bearer token it requires (401 without it).
        openapi: Returns the OpenAPI document served at ``openapi_path`` (built once).
        openapi_path: Where BentoML serves its OpenAPI document.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        routes: dict[str, set[str]],
        json_routes: dict[str, int],
        read_timeout_s: float = 30.0,
        file_fields: dict[str, str] | None = None,
        byte_limits: dict[str, int] | None = None,
        read_timeouts: dict[str, float] | None = None,
        max_concurrent: dict[str, int] | None = None,
        internal_routes: frozenset[str] = frozenset(),
        bearer_tokens: dict[str, str] | None = None,
        openapi: Callable[[], dict[str, Any]] | None = None,
        openapi_path: str = "/docs.json",
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes
        self.json_routes = json_routes
        self.file_fields = file_fields or {}
        self.byte_limits = byte_limits or {}
        self.read_timeouts = read_timeouts or {}
        self.max_concurrent = max_concurrent or {}
        self._in_progress = dict.fromkeys(self.max_concurrent, 0)
        self.read_timeout_s = read_timeout_s
        self.internal_routes = internal_routes
        self.bearer_tokens = {
            path: f"Bearer {token}".encode() for path, token in (bearer_tokens or {}).items()
        }
        self._openapi = openapi
        self._openapi_doc: dict[str, Any] | None = None
        self.openapi_path = openapi_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope["method"]
        if path in self.internal_routes and not is_internal_call(scope):
            await self._reject(scope, receive, send, 404, "Not Found")
            return
        if self._openapi is not None and path == self.openapi_path and method in ("GET", "HEAD"):
            if self._openapi_doc is None:
                self._openapi_doc = self._openapi()
            await JSONResponse(self._openapi_doc)(scope, receive, send)
            return
        rewriter = _ErrorRewriter(send, rewrite=method != "HEAD")
        try:
            guarded = path in self.routes or path in self.json_routes
            if method == "POST" and guarded:
                await self._guarded(scope, receive, rewriter, path)
            else:
                await self.app(scope, receive, rewriter)
        except Exception:
            # Answer instead of leaving the client hanging (BentoML's TimeoutMiddleware would
            # wait for the whole traffic timeout, then send nothing).
            log.exception("unhandled error in %s %s", method, path)
            if rewriter.started:
                raise
            await self._reject(scope, receive, send, 500, "internal server error")

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Authorise, read within the limits, check, then hand the body to the app."""
        expected = self.bearer_tokens.get(path)
        if expected is not None:
            # Starlette decodes header values as latin-1: encoding back gives the sent bytes.
            given = Headers(scope=scope).get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, expected):
                await self._reject(
                    scope,
                    receive,
                    send,
                    401,
                    "a valid bearer token is required (Authorization: Bearer <token>)",
                    {"www-authenticate": "Bearer"},
                )
                return
        cap = self.max_concurrent.get(path)
        if cap is not None and self._in_progress[path] >= cap:
            reason = f"{cap} uploads to {path} are already being processed: try again shortly"
            await self._reject(scope, receive, send, 503, reason, {"retry-after": "5"})
            return
        if cap is None:
            await self._admitted(scope, receive, send, path)
            return
        self._in_progress[path] += 1  # one event loop per worker: no lock needed
        try:
            await self._admitted(scope, receive, send, path)
        finally:
            self._in_progress[path] -= 1

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Read within the limits, check, then hand the body to the app (and let it go)."""
        limit = self.json_routes.get(path, self.byte_limits.get(path, self.max_bytes))
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, 413, self._too_large(int(declared), limit))
            return
        timeout = self.read_timeouts.get(path, self.read_timeout_s)
        body = await self._read_body(scope, receive, send, limit, timeout)
        if body is None:
            return
        if path in self.json_routes:
            problem = self._check_json(scope)
        else:
            field = self.file_fields.get(path, "image")
            problem = await self._check_form(scope, body, field, self.routes[path])
        if problem is not None:
            await self._reject(scope, receive, send, 400, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, body
            if not replayed:
                replayed = True
                message = {"type": "http.request", "body": body, "more_body": False}
                body = b""  # handed over: not held for the rest of the request
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, limit: int, timeout: float
    ) -> bytes | None:
        """The whole body, or None after answering 408/413 (or when the client went away)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        break
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            reason = f"the request body did not arrive within {timeout:g} s ({size} bytes received)"
            await self._reject(scope, receive, send, 408, reason)
            return None
        await self._reject(scope, receive, send, 413, self._too_large(size, limit))
        return None

    @staticmethod
    def _too_large(size: int, limit: int) -> str:
        return f"request body is {size} bytes or more, over the limit of {limit} bytes"

    @staticmethod
    def _check_json(scope: Scope) -> str | None:
        if Headers(scope=scope).get("content-type", "").split(";")[0].strip() != "application/json":
            return "send a JSON body (content-type: application/json)"
        return None

    @staticmethod
    async def _check_form(
        scope: Scope, body: bytes, field: str, text_fields: set[str]
    ) -> str | None:
        """Why the form is unacceptable, or None when it is a proper single-file upload."""
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        media_type, _, params = content_type.partition(";")
        if media_type.strip().lower() != "multipart/form-data":
            return f"send the upload as multipart/form-data, in a file field named {field!r}"
        if "boundary=" not in params.lower():
            return "malformed multipart body: the content-type has no boundary"
        if not body:
            return f"empty body: send the upload in a file field named {field!r}"

        async def once() -> AsyncIterator[bytes]:
            yield body

        # Starlette's parser directly, not Request.form(): inside an app that turns a parse
        # error into an HTTPException, which this middleware would see as a crash.
        parser = MultiPartParser(headers, once(), max_files=2, max_fields=16)
        try:
            form = await parser.parse()
        except Exception as err:  # any parse failure of client bytes is the client's error
            return f"malformed multipart body: {err}"
        try:
            files = form.getlist(field)
            if len(files) != 1:
                return f"exactly one file is expected in form field {field!r}, got {len(files)}"
            if not isinstance(files[0], UploadFile):
                return f"form field {field!r} must be a file upload, not a text value"
            # BentoML names its temporary file after the upload's file name: a name the file
            # system refuses ("File name too long") would be a 500 inside the framework.
            name = (files[0].filename or "").replace("\\", "/").rsplit("/", 1)[-1]
            if len(name.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:
                return f"the upload's file name is over {MAX_FILENAME_BYTES} bytes"
            for name, value in form.multi_items():
                if name != field and (isinstance(value, UploadFile) or name not in text_fields):
                    return f"unexpected form field {name!r}"
        finally:
            await form.close()
        return None

    @staticmethod
    async def _reject(
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with the one error schema; close the connection after a body we did not read."""
        extra = dict(headers or {})
        if status in (408, 413):
            extra["connection"] = "close"
        response = JSONResponse({"error": reason}, status_code=status, headers=extra)
        await response(scope, receive, send)
