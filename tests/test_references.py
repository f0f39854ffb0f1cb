"""Tests for `bananastand.references`: reference-image fetching and its SSRF defences.

A real HTTP server runs in background threads on 127.0.0.1 and 127.0.0.2. An autouse
guard wraps `anyio.connect_tcp` and `anyio.getaddrinfo` so that no test can open a
connection outside loopback or send a DNS query: foreign connects are refused (and make
the test fail), unknown names resolve only through the `fake_dns` table.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpcore
import httpx
import pytest
from PIL import Image

from bananastand.errors import InvalidRequest
from bananastand.references import (
    BlockedAddressError,
    FetchPolicy,
    PinnedNetworkBackend,
    ReferenceFetcher,
    is_blocked_address,
)

MAX_BYTES = 256 * 1024

# ---------------------------------------------------------------------------------------------
# Image fixtures


def _image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 120, 40) if mode == "RGB" else 0).save(buf, fmt, **save)
    return buf.getvalue()


def _noisy_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buf, "PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _header_only_png(width: int, height: int) -> bytes:
    """A tiny 1-bit PNG whose header claims width x height (a decompression bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


CAT_PNG = _image_bytes("PNG", (32, 24))
DOG_JPEG = _image_bytes("JPEG", (40, 30))
TINY_GIF = _image_bytes("GIF", (10, 12), mode="L")
TINY_WEBP = _image_bytes("WEBP", (16, 8))
TIFF = _image_bytes("TIFF", (8, 8))
TRUNCATED_PNG = (lambda png: png[: len(png) // 2])(_noisy_png((64, 64)))
BOMB_PNG = _header_only_png(20_000, 20_000)


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# ---------------------------------------------------------------------------------------------
# The local HTTP server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", Location=location)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        self.server.record(path, self.headers.get("Host", ""))
        try:
            self._route(path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        stop = self.server.stop
        if path == "/cat.png":
            self._send(200, CAT_PNG, "image/png")
        elif path == "/dog.jpg":
            self._send(200, DOG_JPEG, "image/jpeg")
        elif path == "/anim.gif":
            self._send(200, TINY_GIF, "image/gif")
        elif path == "/html":
            self._send(200, b"<html><body>definitely a cat</body></html>", "image/png")
        elif path == "/text":
            self._send(200, b"hello, world\n", "text/plain")
        elif path == "/empty":
            self._send(200, b"", "image/png")
        elif path == "/tiff":
            self._send(200, TIFF, "image/tiff")
        elif path == "/truncated":
            self._send(200, TRUNCATED_PNG, "image/png")
        elif path == "/bomb":
            self._send(200, BOMB_PNG, "image/png")
        elif path == "/declared-huge":
            # Claims a gigabyte, sends a few bytes, then stalls: only an early
            # Content-Length check can answer "too large" (streaming would time out).
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(CAT_PNG[:16])
            self.wfile.flush()
            stop.wait(5)
            self.close_connection = True
        elif path == "/endless-chunked":
            # Chunked, no Content-Length, up to 16 MiB unless the client hangs up.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = CAT_PNG + b"\x00" * (64 * 1024 - len(CAT_PNG))
            for _ in range(256):
                if stop.is_set():
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
        elif path == "/trickle":
            # One byte every 0.2 s: no single read is slow, only the total is.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(CAT_PNG)))
            self.end_headers()
            for byte in CAT_PNG[:50]:
                if stop.wait(0.2):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.close_connection = True
        elif path == "/slow":
            stop.wait(3)  # server-side delay: the client's deadline is what is tested
            self._send(200, CAT_PNG, "image/png")
        elif path == "/redirect":
            self._redirect(query["to"][0])
        elif path.startswith("/chain/"):
            remaining = int(path.rsplit("/", 1)[1])
            if remaining > 0:
                self._redirect(f"/chain/{remaining - 1}")
            else:
                self._send(200, CAT_PNG, "image/png")
        else:
            self._send(404, b"not found", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.stop = threading.Event()
        self.hits: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def record(self, path: str, host_header: str) -> None:
        with self._lock:
            self.hits.append((path, host_header))

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.hits]

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[_Server, _Server]]:
    started: list[tuple[_Server, threading.Thread]] = []
    for host in ("127.0.0.1", "127.0.0.2"):
        server = _Server(host)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
    yield started[0][0], started[1][0]
    for server, thread in started:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def srv(servers: tuple[_Server, _Server]) -> _Server:
    """The server on 127.0.0.1."""
    return servers[0]


@pytest.fixture
def srv2(servers: tuple[_Server, _Server]) -> _Server:
    """The server on 127.0.0.2."""
    return servers[1]


# ---------------------------------------------------------------------------------------------
# Network guard: loopback only, no DNS


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class NetworkGuard:
    dns: dict[str, list[str]] = field(default_factory=dict)
    connects: list[str] = field(default_factory=list)  # every host passed to connect_tcp
    refused: list[str] = field(default_factory=list)  # non-loopback connect attempts


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    state = NetworkGuard()
    real_connect = anyio.connect_tcp
    real_getaddrinfo = anyio.getaddrinfo

    async def connect_tcp(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        host = str(remote_host)
        state.connects.append(host)
        if not _is_loopback(host):
            state.refused.append(host)
            raise ConnectionRefusedError("test guard: non-loopback connect refused")
        return await real_connect(remote_host, remote_port, **kwargs)

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in state.dns:
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, int(port)),
                )
                for ip in state.dns[name]
            ]
        numeric = True
        try:
            socket.inet_aton(name)  # also accepts 2130706433, 0x7f.0.0.1, ...
        except OSError:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                numeric = False
        if numeric or name == "localhost":
            return await real_getaddrinfo(host, port, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "test guard: no DNS in tests")

    monkeypatch.setattr(anyio, "connect_tcp", connect_tcp)
    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    yield state
    assert state.refused == [], f"tests tried to connect outside loopback: {state.refused}"


# ---------------------------------------------------------------------------------------------
# Helpers

ALLOW_LOCAL = ("127.0.0.1/32",)


def policy(**overrides: Any) -> FetchPolicy:
    values: dict[str, Any] = {
        "max_bytes": MAX_BYTES,
        "max_pixels": 1_000_000,
        "timeout_seconds": 5.0,
        "allowed_networks": ALLOW_LOCAL,
    }
    values.update(overrides)
    return FetchPolicy(**values)


async def fetch(url: Any, *, index: int = 0, **overrides: Any) -> Any:
    async with ReferenceFetcher(policy(**overrides)) as fetcher:
        return await fetcher.fetch(url, index=index)


async def refused(url: Any, *, index: int = 0, **overrides: Any) -> str:
    """Fetch `url`, expect InvalidRequest, check its shape, and return its message."""
    with pytest.raises(InvalidRequest) as info:
        await fetch(url, index=index, **overrides)
    message = info.value.message
    assert message.startswith(f"referenceImageUrls[{index}]: "), message
    assert "Traceback" not in message and "\n" not in message, message
    assert "Error" not in message and "Exception" not in message, message
    return message


PRIVATE = "private or local address"


# ---------------------------------------------------------------------------------------------
# Address policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "198.18.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2001:db8::1",
        "not-an-ip",
    ],
)
def test_blocked_addresses(address: str) -> None:
    assert is_blocked_address(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "64:ff9b::808:808"]
)
def test_global_addresses_allowed(address: str) -> None:
    assert not is_blocked_address(address)


def test_allowed_networks_exempt() -> None:
    allowed = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"))
    assert not is_blocked_address("127.0.0.2", allowed)
    assert not is_blocked_address("10.1.2.3", allowed)
    assert not is_blocked_address("::ffff:127.0.0.1", allowed)
    assert is_blocked_address("10.2.0.1", allowed)
    assert is_blocked_address("::1", allowed)


# ---------------------------------------------------------------------------------------------
# The pinned backend in isolation (a spy stands in for the real connect)


class _SpyBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((host, port))
        return httpcore.AsyncNetworkStream()


@pytest.mark.asyncio
async def test_backend_refuses_before_connect_if_any_address_is_blocked(
    guard: NetworkGuard,
) -> None:
    guard.dns["mixed.test"] = ["93.184.216.34", "10.0.0.1"]
    spy = _SpyBackend()
    backend = PinnedNetworkBackend(inner=spy)
    with pytest.raises(BlockedAddressError):
        await backend.connect_tcp("mixed.test", 443)
    with pytest.raises(BlockedAddressError):
        await backend.connect_tcp("169.254.169.254", 80)
    assert spy.calls == []


@pytest.mark.asyncio
async def test_backend_connects_to_the_vetted_ip_not_the_name(guard: NetworkGuard) -> None:
    guard.dns["img.test"] = ["93.184.216.34"]
    spy = _SpyBackend()
    await PinnedNetworkBackend(inner=spy).connect_tcp("img.test", 443)
    assert spy.calls == [("93.184.216.34", 443)]


# ---------------------------------------------------------------------------------------------
# Successful fetches


@pytest.mark.asyncio
async def test_fetch_png_when_loopback_is_allowed(srv: _Server) -> None:
    image = await fetch(f"{srv.base}/cat.png")
    assert (image.mime_type, image.width, image.height) == ("image/png", 32, 24)
    assert image.data == CAT_PNG


@pytest.mark.asyncio
async def test_fetch_jpeg_and_gif(srv: _Server) -> None:
    jpeg = await fetch(f"{srv.base}/dog.jpg")
    assert (jpeg.mime_type, jpeg.width, jpeg.height) == ("image/jpeg", 40, 30)
    gif = await fetch(f"{srv.base}/anim.gif")
    assert (gif.mime_type, gif.width, gif.height) == ("image/gif", 10, 12)


@pytest.mark.asyncio
async def test_decimal_ip_spelling_resolves_to_the_real_address(srv: _Server) -> None:
    image = await fetch(f"http://2130706433:{srv.port}/cat.png")
    assert image.mime_type == "image/png"


@pytest.mark.asyncio
async def test_hostname_is_pinned_to_the_resolved_ip(srv2: _Server, guard: NetworkGuard) -> None:
    guard.dns["pics.test"] = ["127.0.0.2"]
    image = await fetch(f"http://pics.test:{srv2.port}/cat.png", allowed_networks=("127.0.0.2/32",))
    assert image.width == 32
    assert guard.connects == ["127.0.0.2"]  # connected to the vetted IP string
    assert ("/cat.png", f"pics.test:{srv2.port}") in srv2.hits  # Host header kept


# ---------------------------------------------------------------------------------------------
# SSRF refusals


@pytest.mark.asyncio
async def test_loopback_refused_without_allow_list(srv: _Server, guard: NetworkGuard) -> None:
    message = await refused(f"{srv.base}/cat.png", index=2, allowed_networks=())
    assert PRIVATE in message
    assert guard.connects == []


@pytest.mark.asyncio
async def test_localhost_refused_after_resolution(srv: _Server, guard: NetworkGuard) -> None:
    before = srv.paths().count("/cat.png")
    message = await refused(f"http://localhost:{srv.port}/cat.png", allowed_networks=())
    assert PRIVATE in message
    assert guard.connects == []
    assert srv.paths().count("/cat.png") == before


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "https://10.0.0.1/cat.png",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
async def test_non_loopback_private_targets_refused_before_any_connect(
    url: str, guard: NetworkGuard
) -> None:
    started = time.monotonic()
    message = await refused(url, index=1)
    assert PRIVATE in message
    assert time.monotonic() - started < 1.0
    assert guard.connects == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "template",
    [
        "http://[::1]:{port}/cat.png",
        "http://0.0.0.0:{port}/cat.png",
        "http://2130706433:{port}/cat.png",
        "http://0x7f.0.0.1:{port}/cat.png",
        "http://[::ffff:127.0.0.1]:{port}/cat.png",
    ],
)
async def test_loopback_spellings_refused(template: str, srv: _Server, guard: NetworkGuard) -> None:
    message = await refused(template.format(port=srv.port), allowed_networks=())
    assert PRIVATE in message
    assert guard.connects == []


@pytest.mark.asyncio
async def test_name_with_any_private_address_refused(srv2: _Server, guard: NetworkGuard) -> None:
    guard.dns["rebind.test"] = ["127.0.0.2", "127.0.0.1"]
    message = await refused(
        f"http://rebind.test:{srv2.port}/cat.png", allowed_networks=("127.0.0.2/32",)
    )
    assert PRIVATE in message
    assert guard.connects == []


@pytest.mark.asyncio
async def test_unknown_host_is_a_clean_error() -> None:
    message = await refused("http://no-such-host.test/cat.png")
    assert "host not found" in message


# ---------------------------------------------------------------------------------------------
# Redirects


@pytest.mark.asyncio
async def test_redirect_within_allowed_host_followed(srv2: _Server) -> None:
    target = quote(f"{srv2.base}/cat.png", safe="")
    image = await fetch(f"{srv2.base}/redirect?to={target}", allowed_networks=("127.0.0.2/32",))
    assert image.mime_type == "image/png"


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_redirect_to_blocked_host_refused(
    host: str, srv: _Server, srv2: _Server, guard: NetworkGuard
) -> None:
    before = srv.paths().count("/dog.jpg")
    target = quote(f"http://{host}:{srv.port}/dog.jpg", safe="")
    message = await refused(
        f"{srv2.base}/redirect?to={target}", index=4, allowed_networks=("127.0.0.2/32",)
    )
    assert PRIVATE in message
    assert srv.paths().count("/dog.jpg") == before
    assert "127.0.0.1" not in guard.connects
    assert "/redirect" in srv2.paths()


@pytest.mark.asyncio
async def test_redirect_to_other_scheme_refused(srv: _Server) -> None:
    target = quote("file:///etc/passwd", safe="")
    message = await refused(f"{srv.base}/redirect?to={target}")
    assert "unsupported URL" in message


@pytest.mark.asyncio
async def test_redirect_limit(srv: _Server) -> None:
    image = await fetch(f"{srv.base}/chain/3", max_redirects=3)
    assert image.width == 32
    message = await refused(f"{srv.base}/chain/4", max_redirects=3)
    assert "too many redirects" in message


# ---------------------------------------------------------------------------------------------
# Bad bodies and bad answers


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/html", "/text", "/empty", "/tiff"])
async def test_non_images_refused(path: str, srv: _Server) -> None:
    message = await refused(f"{srv.base}{path}", index=3)
    assert "not an image" in message


@pytest.mark.asyncio
async def test_truncated_image_refused(srv: _Server) -> None:
    message = await refused(f"{srv.base}/truncated", index=1)
    assert "corrupt or truncated" in message


@pytest.mark.asyncio
async def test_oversized_by_content_length_refused_early(srv: _Server) -> None:
    message = await refused(f"{srv.base}/declared-huge", index=2, timeout_seconds=3.0)
    assert f"larger than the {MAX_BYTES}-byte limit" in message


@pytest.mark.asyncio
async def test_oversized_chunked_stream_aborted(srv: _Server) -> None:
    message = await refused(f"{srv.base}/endless-chunked", index=2)
    assert f"larger than the {MAX_BYTES}-byte limit" in message


@pytest.mark.asyncio
async def test_bomb_refused(srv: _Server) -> None:
    assert len(BOMB_PNG) < 200  # tiny on the wire, 400 megapixels declared
    message = await refused(f"{srv.base}/bomb", index=1, max_pixels=50_000_000)
    assert "too large" in message


@pytest.mark.asyncio
async def test_pixel_limit_checked_from_header(srv: _Server) -> None:
    message = await refused(f"{srv.base}/cat.png", max_pixels=32 * 24 - 1)
    assert "too large (32x24 pixels" in message
    image = await fetch(f"{srv.base}/cat.png", max_pixels=32 * 24)
    assert image.width == 32


@pytest.mark.asyncio
async def test_pillow_bomb_warning_is_an_error() -> None:
    # 100 Mpx: above Pillow's warning threshold, below our (raised) limit.
    url = _data_url(_header_only_png(10_000, 10_000))
    message = await refused(url, max_pixels=200_000_000)
    assert "too large" in message


@pytest.mark.asyncio
async def test_http_error_status(srv: _Server) -> None:
    message = await refused(f"{srv.base}/404", index=5)
    assert "HTTP 404" in message


@pytest.mark.asyncio
async def test_timeout_covers_the_whole_fetch(srv: _Server) -> None:
    started = time.monotonic()
    message = await refused(f"{srv.base}/slow", index=1, timeout_seconds=0.5)
    assert "could not be fetched (timeout)" in message
    assert time.monotonic() - started < 2.5


@pytest.mark.asyncio
async def test_timeout_is_total_not_per_read(srv: _Server) -> None:
    started = time.monotonic()
    message = await refused(f"{srv.base}/trickle", index=1, timeout_seconds=1.0)
    assert "could not be fetched (timeout)" in message
    assert time.monotonic() - started < 3.0


@pytest.mark.asyncio
async def test_connection_refused_is_a_clean_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = await refused(f"http://127.0.0.1:{port}/cat.png")
    assert "could not be fetched (connection failed)" in message


# ---------------------------------------------------------------------------------------------
# data: URLs and schemes


@pytest.mark.asyncio
async def test_data_url_png_and_jpeg() -> None:
    png = await fetch(_data_url(CAT_PNG))
    assert (png.mime_type, png.width, png.height, png.data) == ("image/png", 32, 24, CAT_PNG)
    # The declared type is not trusted: these JPEG bytes are reported as JPEG.
    jpeg = await fetch(_data_url(DOG_JPEG, "image/png"))
    assert (jpeg.mime_type, jpeg.width, jpeg.height) == ("image/jpeg", 40, 30)
    webp = await fetch(_data_url(TINY_WEBP, "IMAGE/WEBP"))
    assert (webp.mime_type, webp.width) == ("image/webp", 16)


@pytest.mark.asyncio
async def test_line_wrapped_base64_data_url() -> None:
    wrapped = "data:image/png;base64," + base64.encodebytes(CAT_PNG).decode()
    assert "\n" in wrapped
    image = await fetch(wrapped)
    assert image.data == CAT_PNG


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("data:image/png;base64,@@@not-base64@@@", "invalid base64"),
        ("data:image/png;base64,iVBORw0KGgo", "invalid base64"),  # bad padding
        (_data_url(b"hello, world"), "not an image"),
        (_data_url(b""), "not an image"),
        ("data:text/plain;base64,aGVsbG8=", "unsupported data URL"),
        ("data:image/png,rawbytes", "unsupported data URL"),
        (_data_url(TRUNCATED_PNG), "corrupt or truncated"),
    ],
)
async def test_bad_data_urls(url: str, fragment: str) -> None:
    message = await refused(url, index=2)
    assert fragment in message


@pytest.mark.asyncio
async def test_data_url_size_checked_before_decoding() -> None:
    # Not even valid base64, but long enough that it cannot fit: refused as too large.
    message = await refused("data:image/png;base64," + "!" * (MAX_BYTES * 2))
    assert "larger than" in message
    ok = _data_url(CAT_PNG)
    message = await refused(ok, max_bytes=len(CAT_PNG) - 1)
    assert "larger than" in message
    assert (await fetch(ok, max_bytes=len(CAT_PNG))).width == 32


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/cat.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://127.0.0.1:70/",
        "127.0.0.1/cat.png",
        "",
        None,
        42,
        b"http://127.0.0.1/cat.png",
    ],
)
async def test_bad_urls_refused(url: Any, guard: NetworkGuard) -> None:
    await refused(url, index=7)
    assert guard.connects == []


# ---------------------------------------------------------------------------------------------
# fetch_all


@pytest.mark.asyncio
async def test_fetch_all_keeps_order(srv: _Server) -> None:
    urls = [f"{srv.base}/dog.jpg", _data_url(CAT_PNG), f"{srv.base}/anim.gif"]
    async with ReferenceFetcher(policy()) as fetcher:
        images = await fetcher.fetch_all(urls)
        assert await fetcher.fetch_all([]) == []
    assert [(i.mime_type, i.width) for i in images] == [
        ("image/jpeg", 40),
        ("image/png", 32),
        ("image/gif", 10),
    ]


@pytest.mark.asyncio
async def test_fetch_all_first_error_wins_and_cancels_the_rest(srv: _Server) -> None:
    urls = [f"{srv.base}/slow", _data_url(CAT_PNG), f"{srv.base}/404"]
    started = time.monotonic()
    async with ReferenceFetcher(policy(timeout_seconds=10.0)) as fetcher:
        with pytest.raises(InvalidRequest) as info:
            await fetcher.fetch_all(urls)
    assert info.value.message == "referenceImageUrls[2]: could not be fetched (HTTP 404)"
    assert time.monotonic() - started < 2.5  # did not wait for /slow


# ---------------------------------------------------------------------------------------------
# Injected transport


def _mock(handler: Any) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return handler(request)

    return httpx.MockTransport(wrapped), seen


@pytest.mark.asyncio
async def test_injected_transport_and_mime_from_bytes_not_header() -> None:
    transport, seen = _mock(
        lambda request: httpx.Response(200, content=DOG_JPEG, headers={"Content-Type": "image/png"})
    )
    async with ReferenceFetcher(policy(), transport=transport) as fetcher:
        image = await fetcher.fetch("https://images.example/dog")
        assert image.mime_type == "image/jpeg"
        assert seen == ["https://images.example/dog"]
        # Literal private IPs are refused even before an injected transport is asked.
        with pytest.raises(InvalidRequest, match=PRIVATE):
            await fetcher.fetch("http://169.254.169.254/latest/meta-data")
    assert seen == ["https://images.example/dog"]


@pytest.mark.asyncio
async def test_compressed_bodies_refused() -> None:
    transport, _ = _mock(
        lambda request: httpx.Response(
            200, content=zlib.compress(CAT_PNG), headers={"Content-Encoding": "deflate"}
        )
    )
    async with ReferenceFetcher(policy(), transport=transport) as fetcher:
        with pytest.raises(InvalidRequest, match="unsupported Content-Encoding"):
            await fetcher.fetch("https://images.example/cat.png", index=1)
