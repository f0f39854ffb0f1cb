"""A fake Gemini API server for tests: real HTTP on 127.0.0.1, the real REST wire
format of `models/{model}:generateContent`, scripted behaviour per call.

Each call takes the next behaviour from the script (`FakeGemini.script(...)`);
when the script is empty, a `fake:<behaviour>` token in the prompt decides, and
otherwise the call succeeds (`ok`). A behaviour may carry an argument after a
colon, e.g. `429:47s` (the RetryInfo delay). Behaviours:

- `ok`: a thought draft image (`thought: true`), a text part, then the final PNG,
  sized as Gemini sizes it for the requested aspect ratio and imageSize;
- `overlap`: like `ok`, after holding the call until `overlap_target` calls are in
  flight at once or `overlap_seconds` passed (makes a concurrency bound visible);
- `safety`: a candidate with `finishReason: IMAGE_SAFETY` and no content;
- `prompt_blocked`: `promptFeedback.blockReason: SAFETY` and no candidates;
- `text_only`: a candidate with one text part and no image;
- `no_image`: a candidate with `finishReason: NO_IMAGE` and no content;
- `429[:delay]`, `500`, `503`, `504`, `400`, `403`: Google's error JSON (`400:echo`
  quotes the caller's key in the message, as a careless gateway might);
- `slow`: held until the server stops (or `release()`), then `ok`;
- `malformed`: status 200 with a body that is not JSON;
- `drop`: the connection is closed without an answer.

Every call is recorded (`FakeGemini.calls`) with what the client sent.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

PATH = re.compile(r"^/(?P<version>v1beta|v1)/models/(?P<model>[^/:]+):(?P<method>\w+)$")

# Gemini's 1K output sizes per aspect ratio (Nano Banana).
SIZES_1K = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
SCALES = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}

ERRORS: dict[str, tuple[int, str, str]] = {
    "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument: imageSize 9K."),
    "403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "500": (500, "INTERNAL", "An internal error has occurred."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "504": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


@dataclass
class RecordedCall:
    """What one request carried."""

    model: str
    method: str
    api_key: str | None
    headers: dict[str, str]
    texts: list[str]
    parts: int
    image_mime_types: list[str]
    images: list[bytes]
    aspect_ratio: str | None
    image_size: str | None
    seed: int | None
    response_modalities: list[str] | None
    behaviour: str = ""
    started_at: float = 0.0
    serial: int = 0  # 1 for the first call the server saw, and so on

    @property
    def prompt(self) -> str:
        return " ".join(self.texts)


@dataclass
class FakeGemini:
    """The server's state; start it with `running_fake_gemini()`."""

    api_key: str = "test-key"
    overlap_target: int = 2
    overlap_seconds: float = 0.3
    calls: list[RecordedCall] = field(default_factory=list)
    max_in_flight: int = 0
    url: str = ""
    _in_flight: int = 0
    _script: deque[str] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _release: threading.Event = field(default_factory=threading.Event)
    _counter: int = 0

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    # --- scripting -------------------------------------------------------------
    def script(self, *behaviours: str) -> None:
        """Queue behaviours for the next calls, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def release(self) -> None:
        """Let every held (`slow`) call answer."""
        self._release.set()

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    # --- serving ----------------------------------------------------------------
    def _begin(self, call: RecordedCall) -> str:
        with self._lock:
            if self._script:
                behaviour = self._script.popleft()
            else:
                match = re.search(r"fake:([\w:.]+)", call.prompt)
                behaviour = match.group(1) if match else "ok"
            call.behaviour = behaviour
            call.started_at = time.monotonic()
            self.calls.append(call)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._counter += 1
            call.serial = self._counter
            self._changed.notify_all()
            return behaviour

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._changed.notify_all()

    def _wait_for_overlap(self) -> None:
        deadline = time.monotonic() + self.overlap_seconds
        with self._changed:
            while self._in_flight < self.overlap_target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)


def _b64decode(text: str) -> bytes:
    """Both base64 alphabets, padding optional."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def _record(
    model: str, method: str, headers: dict[str, str], key: str | None, body: dict[str, Any]
) -> RecordedCall:
    texts: list[str] = []
    mimes: list[str] = []
    images: list[bytes] = []
    parts = 0
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            parts += 1
            if "text" in part:
                texts.append(part["text"])
            inline = _field(part, "inlineData", "inline_data")
            if inline:
                mimes.append(_field(inline, "mimeType", "mime_type"))
                images.append(_b64decode(inline["data"]))
    config = _field(body, "generationConfig", "generation_config") or {}
    image_config = _field(config, "imageConfig", "image_config") or {}
    return RecordedCall(
        model=model,
        method=method,
        api_key=key,
        headers=headers,
        texts=texts,
        parts=parts,
        image_mime_types=mimes,
        images=images,
        aspect_ratio=_field(image_config, "aspectRatio", "aspect_ratio"),
        image_size=_field(image_config, "imageSize", "image_size"),
        seed=config.get("seed"),
        response_modalities=_field(config, "responseModalities", "response_modalities"),
    )


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def output_size(aspect_ratio: str | None, image_size: str | None) -> tuple[int, int]:
    width, height = SIZES_1K.get(aspect_ratio or "1:1", SIZES_1K["1:1"])
    scale = SCALES.get(image_size or "1K", 1)
    return int(width * scale), int(height * scale)


def _inline(data: bytes, *, thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {
        "inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}
    }
    if thought:
        part["thought"] = True
    return part


def _ok_body(call: RecordedCall) -> dict[str, Any]:
    n = call.serial  # a different colour per call: distinct images
    colour = ((n * 53) % 256, (n * 97) % 256, (n * 29 + 100) % 256)
    final = png(output_size(call.aspect_ratio, call.image_size), colour)
    parts = [
        _inline(png((64, 64), (128, 128, 128)), thought=True),
        {"text": "Here is the banana you asked for."},
        _inline(final),
    ]
    return _candidate(parts, "STOP")


def _candidate(parts: list[dict[str, Any]] | None, finish: str) -> dict[str, Any]:
    candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 1300},
        "modelVersion": "fake",
    }


def _error(name: str, argument: str | None, key: str | None = None) -> tuple[int, dict[str, Any]]:
    code, status, message = ERRORS[name]
    if argument == "echo":  # an upstream message quoting the caller's key
        message = f"API key not valid: {key}. Please pass a valid API key."
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if name == "429":
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": argument or "0.2s",
            }
        ]
    return code, {"error": error}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        fake = self.server.fake
        path, _, query = self.path.partition("?")
        match = PATH.match(path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not match:
            self._json(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})
            return
        key = self.headers.get("x-goog-api-key") or _query_key(query)
        if key != fake.api_key:
            self._json(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Method doesn't allow unregistered callers. "
                        "Please use API Key or other form of API consumer identity.",
                        "status": "PERMISSION_DENIED",
                    }
                },
            )
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, _error("400", None)[1])
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        call = _record(match["model"], match["method"], headers, key, body)
        behaviour = fake._begin(call)
        try:
            self._behave(fake, call, behaviour)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (timeout, cancellation)
        finally:
            fake._end()

    def _behave(self, fake: FakeGemini, call: RecordedCall, behaviour: str) -> None:
        name, _, argument = behaviour.partition(":")
        if name == "overlap":
            fake._wait_for_overlap()
            name = "ok"
        if name == "slow":
            fake._release.wait(30)
            name = "ok"
        if name == "ok":
            self._answer(call, _ok_body(call))
        elif name == "safety":
            self._answer(call, _candidate(None, "IMAGE_SAFETY"))
        elif name == "no_image":
            self._answer(call, _candidate(None, "NO_IMAGE"))
        elif name == "prompt_blocked":
            self._answer(call, {"promptFeedback": {"blockReason": "SAFETY"}})
        elif name == "text_only":
            text = "I can't make that picture, but here is a poem about bananas instead. " * 10
            self._answer(call, _candidate([{"text": text}], "STOP"))
        elif name in ERRORS:
            self._json(*_error(name, argument or None, call.api_key))
        elif name == "malformed":
            self._send(200, b'{"candidates": [ {"content": not json', "application/json")
        elif name == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            raise ValueError(f"unknown fake behaviour {behaviour!r}")

    def _answer(self, call: RecordedCall, payload: dict[str, Any]) -> None:
        if call.method == "streamGenerateContent":
            data = b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"
            self._send(200, data, "text/event-stream")
        else:
            self._json(200, payload)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=UTF-8")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _query_key(query: str) -> str | None:
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "key":
            return value
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGemini


@contextmanager
def running_fake_gemini(api_key: str = "test-key") -> Iterator[FakeGemini]:
    """Start a fake on a free port; stop it (releasing held calls) on exit."""
    fake = FakeGemini(api_key=api_key)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    host, port = server.server_address[:2]
    fake.url = f"http://{host}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="fake-gemini", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake.release()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
