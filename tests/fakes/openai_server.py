"""A fake OpenAI Images API: a real HTTP server on 127.0.0.1 speaking the wire format.

It answers `POST /v1/images/generations` (JSON) and `POST /v1/images/edits`
(multipart, one `image[]` field per input image) with real images made by
Pillow at the requested size, in the requested format, as base64 in
`data[].b64_json`; with `stream: true` it answers Server-Sent Events
(`image_generation.partial_image` ... `image_generation.completed`, or the
`image_edit.*` events for edits). A wrong bearer token gets OpenAI's 401 error
body.

Tests script what it does: `script(...)` queues behaviours consumed one per
request, `always(...)` sets what it does once the queue is empty (default: `ok()`).
Every request is recorded (`requests`) with the fields a test may check.

The server runs in a background thread, so the app under test reaches it
through a real socket, exactly as it would reach api.openai.com.
"""

from __future__ import annotations

import base64
import collections
import email.message
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
SIZES = {"1024x1024": (1024, 1024), "1536x1024": (1536, 1024), "1024x1536": (1024, 1536)}
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30), (150, 40, 200)]


# --- behaviours ----------------------------------------------------------------------
@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one request."""

    kind: str  # ok | fewer | error | slow | hold | malformed | stream_error
    count: int | None = None  # fewer: how many images to return
    status: int = 200  # error: the HTTP status
    error_type: str = ""
    code: str | None = None
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers (retry-after)
    delay: float = 0.0  # slow: seconds before answering


def ok() -> Behaviour:
    return Behaviour("ok")


def fewer(count: int) -> Behaviour:
    """Answer 200 with only `count` images, whatever `n` was."""
    return Behaviour("fewer", count=count)


def moderation_blocked() -> Behaviour:
    return Behaviour(
        "error",
        status=400,
        error_type="image_generation_user_error",
        code="moderation_blocked",
        message="Your request was rejected as a result of our safety system. "
        "Your request may contain content that is not allowed by our safety system.",
    )


def rate_limited(*, retry_after: str | None = None, retry_after_ms: str | None = None) -> Behaviour:
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers.append(("retry-after", retry_after))
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", retry_after_ms))
    return Behaviour(
        "error",
        status=429,
        error_type="requests",
        code="rate_limit_exceeded",
        message="Rate limit reached for gpt-image-1 on images per minute (IPM): Limit 5.",
        headers=tuple(headers),
    )


def server_error(status: int = 500) -> Behaviour:
    return Behaviour(
        "error",
        status=status,
        error_type="server_error",
        message="The server had an error while processing your request. Sorry about that!",
    )


def invalid(message: str, *, param: str | None = None) -> Behaviour:
    return Behaviour(
        "error", status=400, error_type="invalid_request_error", code=param, message=message
    )


def slow(seconds: float) -> Behaviour:
    """Wait `seconds` (or until the server closes) before answering normally."""
    return Behaviour("slow", delay=seconds)


def hold() -> Behaviour:
    """Wait until `FakeOpenAI.release()` (or the server closes), then answer normally."""
    return Behaviour("hold")


def malformed() -> Behaviour:
    """200 with a body cut off in the middle of its JSON."""
    return Behaviour("malformed")


def stream_error(message: str = "Internal error while streaming") -> Behaviour:
    """In stream mode: one partial image, then an `error` event (no completed image)."""
    return Behaviour("stream_error", message=message)


# --- records -------------------------------------------------------------------------
@dataclass
class RecordedRequest:
    endpoint: str  # "generations" | "edits" | the raw path when unknown
    headers: dict[str, str]
    fields: dict[str, Any] = field(default_factory=dict)  # JSON body or form fields
    # uploaded files: (form field, filename, content type, bytes)
    images: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    authorized: bool = True
    body: bytes = b""

    @property
    def model(self) -> Any:
        return self.fields.get("model")

    @property
    def n(self) -> int:
        return int(self.fields.get("n") or 1)

    @property
    def size(self) -> Any:
        return self.fields.get("size")

    @property
    def quality(self) -> Any:
        return self.fields.get("quality")

    @property
    def output_format(self) -> str:
        return str(self.fields.get("output_format") or "png")

    @property
    def stream(self) -> bool:
        value = self.fields.get("stream")
        return value is True or value == "true"

    @property
    def partial_images(self) -> int:
        return int(self.fields.get("partial_images") or 0)


# --- the server ----------------------------------------------------------------------
class FakeOpenAI:
    """Start with `start()` (or as a context manager); `url` is the server root, the
    SDK's base URL is `url + "/v1"`."""

    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._default = ok()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._released = threading.Event()
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # scripting
    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._queue.extend(behaviours)

    def always(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._default = behaviour

    def _next(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    def release(self) -> None:
        """Let every held request (see `hold()`) answer."""
        self._released.set()

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes up slow answers
        self._released.set()  # and held ones
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    # --- plumbing ------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-request-id", "req_fake")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, behaviour: Behaviour) -> None:
        error = {
            "error": {
                "message": behaviour.message,
                "type": behaviour.error_type,
                "param": None,
                "code": behaviour.code,
            }
        }
        self._send(behaviour.status, json.dumps(error).encode(), headers=behaviour.headers)

    # --- requests ------------------------------------------------------------------
    def do_POST(self) -> None:
        self.server_fake._enter()
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing to answer
        finally:
            self.server_fake._leave()

    def _answer(self) -> None:
        fake = self.server_fake
        body = self._read_body()
        path = self.path.split("?")[0]
        endpoint = {"/v1/images/generations": "generations", "/v1/images/edits": "edits"}.get(
            path, path
        )
        record = RecordedRequest(endpoint, {k.lower(): v for k, v in self.headers.items()})
        record.body = body
        record.authorized = self.headers.get("authorization") == f"Bearer {fake.api_key}"
        try:
            if endpoint == "generations":
                record.fields = json.loads(body)
            elif endpoint == "edits":
                record.fields, record.images = _parse_multipart(
                    self.headers.get("content-type", ""), body
                )
        except ValueError as exc:
            fake._record(record)
            self._send_error(Behaviour("error", status=400, message=f"unreadable body: {exc}"))
            return
        fake._record(record)
        if not record.authorized:
            self._send_error(
                Behaviour(
                    "error",
                    status=401,
                    error_type="invalid_request_error",
                    code="invalid_api_key",
                    message="Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                )
            )
            return
        if endpoint not in ("generations", "edits"):
            self._send_error(Behaviour("error", status=404, message=f"Unknown path {path}"))
            return
        if endpoint == "edits" and not record.images:
            self._send_error(invalid("image is required", param="image"))
            return
        behaviour = fake._next()
        if behaviour.kind == "slow":
            if fake._closing.wait(behaviour.delay):
                return
            behaviour = ok()
        if behaviour.kind == "hold":
            fake._released.wait()  # close() sets it too
            if fake._closing.is_set():
                return
            behaviour = ok()
        if behaviour.kind == "error":
            self._send_error(behaviour)
        elif behaviour.kind == "malformed":
            self._send(200, b'{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgo')
        elif record.stream:
            self._stream(record, behaviour)
        else:
            count = record.n if behaviour.kind != "fewer" else behaviour.count or 0
            data = [{"b64_json": _image_b64(record, index)} for index in range(count)]
            answer = {
                "created": int(time.time()),
                "background": "opaque",
                "output_format": record.output_format,
                "quality": record.quality or "auto",
                "size": record.size or "auto",
                "data": data,
                "usage": _usage(),
            }
            self._send(200, json.dumps(answer).encode())

    def _stream(self, record: RecordedRequest, behaviour: Behaviour) -> None:
        prefix = "image_generation" if record.endpoint == "generations" else "image_edit"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        common = {
            "background": "opaque",
            "created_at": int(time.time()),
            "output_format": record.output_format,
            "quality": record.quality or "auto",
            "size": record.size or "auto",
        }
        count = record.n if behaviour.kind != "fewer" else behaviour.count or 0
        partials = 1 if behaviour.kind == "stream_error" else record.partial_images
        for index in range(count):
            for partial in range(partials):
                event = {
                    "type": f"{prefix}.partial_image",
                    "b64_json": _image_b64(record, index, partial=partial + 1),
                    "partial_image_index": partial,
                    **common,
                }
                self._event(event["type"], event)
            if behaviour.kind == "stream_error":
                error = {"message": behaviour.message, "type": "server_error", "code": None}
                self._event("error", {"type": "error", "error": error})
                return
            event = {
                "type": f"{prefix}.completed",
                "b64_json": _image_b64(record, index),
                "usage": _usage(),
                **common,
            }
            self._event(event["type"], event)

    def _event(self, name: str, data: dict[str, Any]) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


def _usage() -> dict[str, Any]:
    return {
        "input_tokens": 50,
        "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
        "output_tokens": 272,
        "total_tokens": 322,
    }


def _image_b64(record: RecordedRequest, index: int, *, partial: int = 0) -> str:
    """A real image of the requested size and format; its colour tells images apart."""
    size = SIZES.get(str(record.size), (1024, 1024))
    colour = COLOURS[index % len(COLOURS)]
    if partial:  # partial images are darker drafts of the final one
        colour = tuple(c // (partial + 1) for c in colour)  # type: ignore[assignment]
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, PIL_FORMAT.get(record.output_format, "PNG"))
    return base64.b64encode(buffer.getvalue()).decode()


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, Any], list[tuple[str, str, str, bytes]]]:
    """multipart/form-data → (text fields, file fields), without python-multipart."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise ValueError(f"expected multipart/form-data with a boundary, got {content_type!r}")
    fields: dict[str, Any] = {}
    files: list[tuple[str, str, str, bytes]] = []
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("multipart body without its closing boundary")
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("malformed multipart part")
        head, separator, content = chunk[2:-2].partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("multipart part without headers")
        part = email.message.Message()
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            part[name.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("multipart part without a name")
        if isinstance(filename, str):
            files.append((name, filename, part.get("content-type", ""), content))
        else:
            fields[name] = content.decode("utf-8")
    if "n" in fields:
        fields["n"] = int(fields["n"])
    if "partial_images" in fields:
        fields["partial_images"] = int(fields["partial_images"])
    return fields, files
