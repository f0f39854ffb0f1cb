"""Fetch and validate the reference images a client names in `referenceImageUrls`.

The server fetches these URLs itself, so every fetch is an SSRF risk. The defences:

* Only ``http``, ``https`` and ``data:image/<type>;base64,<data>`` URLs are accepted.
* Every TCP connection goes through :class:`PinnedNetworkBackend`, an httpcore network
  backend that resolves the host itself, refuses the connection if *any* resolved address
  is not globally routable (loopback, RFC 1918, link-local incl. cloud metadata, CGNAT,
  multicast, reserved, IPv4-mapped / NAT64 / 6to4 forms of those, ...), and then connects
  to the vetted IP string. The address checked is the address connected to, so DNS
  rebinding cannot slip a private address in between a check and the connect. TLS still
  verifies the certificate and sends SNI for the URL's hostname, because httpcore hands
  ``server_hostname`` to ``start_tls`` separately.
* No proxies or other settings from the environment, no cookies kept between fetches,
  redirects followed by hand (each hop re-checked), one overall deadline per reference,
  a byte cap enforced while streaming, and a pixel cap checked from the image header
  before anything is decoded.

Every failure becomes :class:`~bananastand.errors.InvalidRequest` with a client-safe
message that names the offending reference, e.g. ``referenceImageUrls[1]: not an image``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import ipaddress
import re
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any

import anyio
import httpcore
import httpx
from PIL import Image, UnidentifiedImageError

from bananastand.errors import Gone, InvalidRequest, NotFound
from bananastand.providers.base import ReferenceImage

__all__ = [
    "FetchPolicy",
    "PinnedNetworkBackend",
    "ReferenceFetcher",
    "is_blocked_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Pillow format name -> MIME type. Also the allow-list of formats we will parse at all.
# MPO is what Pillow calls a multi-picture JPEG (common from phone cameras); its bytes are
# a valid JPEG, so it is reported as one.
_FORMAT_MIME: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
_OPEN_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DATA_URL = re.compile(r"data:image/([a-z0-9.+-]+);base64,(.*)", re.IGNORECASE | re.DOTALL)
_MAX_URL_LENGTH = 8192
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits applied to every reference image."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    timeout_seconds: float = 10.0  # total per reference, including redirects
    max_redirects: int = 3
    allowed_networks: tuple[str, ...] = ()  # CIDRs exempt from the block list (tests, intranets)


# ---------------------------------------------------------------------------------------------
# Address policy


def is_blocked_address(address: str | IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """True when ``address`` must not be connected to.

    ``allowed`` networks are exempt. Otherwise anything that is not globally routable is
    blocked; IPv4 addresses embedded in IPv6 (IPv4-mapped, NAT64 well-known prefix, 6to4)
    are judged by the IPv4 address they carry.
    """
    if isinstance(address, str):
        try:
            ip: IPAddress = ipaddress.ip_address(address)
        except ValueError:
            return True  # not an IP address we understand: refuse
    else:
        ip = address
    allowed = tuple(allowed)
    if _in_any(ip, allowed):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_blocked_address(embedded, allowed)
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_unspecified
    )


def _in_any(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


class BlockedAddressError(Exception):
    """Raised by the network backend: the host resolves to a refused address."""


class HostNotFoundError(Exception):
    """Raised by the network backend: the host name did not resolve."""


# ---------------------------------------------------------------------------------------------
# Transport: an httpcore pool whose every TCP connect is resolved, vetted and pinned


class PinnedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore backend that only connects to vetted IP addresses.

    ``connect_tcp`` resolves ``host`` itself, raises :class:`BlockedAddressError` if any
    resolved address is blocked, and otherwise asks the wrapped backend to connect to the
    IP string (so no second, unchecked resolution happens).
    """

    def __init__(
        self,
        allowed_networks: Iterable[IPNetwork] = (),
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed = tuple(allowed_networks)
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` to its IP addresses (deduplicated, in resolver order)."""
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise HostNotFoundError(host) from exc
        addresses: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = str(sockaddr[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise HostNotFoundError(host)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self.resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        if any(is_blocked_address(ip, self._allowed) for ip in addresses):
            raise BlockedAddressError(host)
        last_error: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    ip,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore exception -> httpx exception, most specific first.
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextlib.contextmanager
def _httpcore_errors_as_httpx() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_type, httpx_type in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, core_type):
                raise httpx_type(str(exc)) from exc
        raise


class _PinnedResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpcore_errors_as_httpx():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            with _httpcore_errors_as_httpx():
                await self._stream.aclose()


class _PinnedTransport(httpx.AsyncBaseTransport):
    """Minimal httpx transport over an httpcore pool that uses :class:`PinnedNetworkBackend`.

    httpx 0.28's ``AsyncHTTPTransport`` has no public way to choose the network backend,
    so this adapter does what it does (request/response conversion, exception mapping)
    around a pool we build ourselves. No proxy support, by design.
    """

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend,
        ssl_context: ssl.SSLContext,
        max_connections: int = 32,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=8,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpcore_errors_as_httpx():
            core_response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_PinnedResponseStream(core_response.stream),
            extensions=core_response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


# ---------------------------------------------------------------------------------------------
# Image validation


def pinned_transport(
    allowed: Iterable[IPNetwork] = (), *, max_connections: int = 32
) -> httpx.AsyncBaseTransport:
    """An httpx transport that only ever connects to vetted public addresses."""
    ssl_context = httpx.create_ssl_context(trust_env=False)
    return _PinnedTransport(PinnedNetworkBackend(allowed), ssl_context, max_connections)


def checked_url(
    url: str | httpx.URL, label: str, allowed: Iterable[IPNetwork] = (), *, redirect: bool = False
) -> httpx.URL:
    """An http(s) URL with a host that is not a literal private address; else a clear
    InvalidRequest naming `label`. Host names are vetted when connecting."""
    where = "redirects to" if redirect else "is"
    if isinstance(url, str):
        if len(url) > _MAX_URL_LENGTH:
            raise InvalidRequest(f"{label}: URL is too long")
        try:
            url = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise InvalidRequest(f"{label}: {where} an invalid URL") from exc
    if url.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"{label}: {where} an unsupported URL; use http, https or "
            "data:image/<type>;base64,<data>"
            if label.startswith("reference")
            else f"{label}: {where} an unsupported URL; use http or https"
        )
    if not url.host:
        raise InvalidRequest(f"{label}: {where} a URL without a host")
    # Literal IPs are refused here, before any transport is involved. Names (and the
    # odd spellings of IPs that only the resolver understands) are checked at connect.
    try:
        literal: IPAddress | None = ipaddress.ip_address(url.host)
    except ValueError:
        literal = None
    if literal is not None and is_blocked_address(literal, allowed):
        raise InvalidRequest(f"{label}: points to a private or local address")
    return url


class _ImageProblem(Exception):
    """A client-safe reason the bytes are not an acceptable image."""


def _inspect_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Return (mime type, width, height); raise :class:`_ImageProblem` otherwise.

    Runs in a worker thread: it decodes the whole image to prove it is intact.
    """
    not_an_image = "not an image (supported: PNG, JPEG, WEBP, GIF, BMP)"
    if not data:
        raise _ImageProblem(not_an_image)
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _ImageProblem("image is too large") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _ImageProblem(not_an_image) from exc
        with image:
            mime = _FORMAT_MIME.get(image.format or "")
            if mime is None:
                raise _ImageProblem(not_an_image)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise _ImageProblem("image is corrupt or has no pixels")
            if width * height > max_pixels:
                raise _ImageProblem(
                    f"image is too large ({width}x{height} pixels; limit {max_pixels} pixels)"
                )
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _ImageProblem("image is too large") from exc
            except Exception as exc:  # any decoder failure means a corrupt file
                raise _ImageProblem("image is corrupt or truncated") from exc
    return mime, width, height


# ---------------------------------------------------------------------------------------------
# The fetcher


class ReferenceFetcher:
    """Fetches reference images under a :class:`FetchPolicy`.

    ``transport`` replaces the pinned transport (for tests). A replacement transport
    takes over the responsibility for address checks, except that URLs whose host is a
    literal blocked IP are still refused up front.

    ``own_images`` reads this server's own image URLs without a request (see
    `storage.read_own_image`): they may well be on a private or local address.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        own_images: Callable[[str], Awaitable[bytes | None]] | None = None,
    ) -> None:
        self._policy = policy
        self._own_images = own_images
        self._allowed = parse_networks(policy.allowed_networks)
        if transport is None:
            transport = pinned_transport(self._allowed)
        timeout = policy.timeout_seconds
        self._client = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, pool=timeout),
            # A jar that refuses every cookie: fetches for different clients share nothing.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={
                "User-Agent": "Bananastand reference fetcher",
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
        )

    async def __aenter__(self) -> ReferenceFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch_all(
        self, urls: Sequence[str], *, field: str = "referenceImageUrls"
    ) -> list[ReferenceImage]:
        """Fetch every URL concurrently, in order; the first failure cancels the rest.
        Errors name each reference as `field[i]`, the way the caller sent it."""
        results: list[ReferenceImage | None] = [None] * len(urls)
        failures: list[Exception] = []

        async with anyio.create_task_group() as group:

            async def one(index: int, url: str) -> None:
                try:
                    results[index] = await self.fetch(url, index=index, field=field)
                except Exception as exc:
                    if not failures:
                        failures.append(exc)
                    group.cancel_scope.cancel()

            for index, url in enumerate(urls):
                group.start_soon(one, index, url)

        if failures:
            raise failures[0]
        return [result for result in results if result is not None]

    async def fetch(
        self, url: str, *, index: int = 0, field: str = "referenceImageUrls"
    ) -> ReferenceImage:
        """Fetch and validate one reference; raise InvalidRequest naming it on failure."""
        label = f"{field}[{index}]"
        if not isinstance(url, str):
            raise InvalidRequest(f"{label}: must be a URL string")
        if not url:
            raise InvalidRequest(f"{label}: is empty")
        if url[:5].lower() == "data:":
            data = self._decode_data_url(url, label)
        elif (own := await self._own_image(url, label)) is not None:
            data = own
        else:
            data = await self._download(url, label)
        try:
            mime, width, height = await anyio.to_thread.run_sync(
                _inspect_image, data, self._policy.max_pixels
            )
        except _ImageProblem as exc:
            raise InvalidRequest(f"{label}: {exc}") from exc
        return ReferenceImage(data=data, mime_type=mime, width=width, height=height)

    async def _own_image(self, url: str, label: str) -> bytes | None:
        if self._own_images is None:
            return None
        try:
            data = await self._own_images(url)
        except (NotFound, Gone) as exc:
            raise InvalidRequest(f"{label}: {exc.message} (an image URL of this server)") from exc
        if data is not None and len(data) > self._policy.max_bytes:
            raise self._too_large(label)
        return data

    # -- data: URLs ---------------------------------------------------------------------------

    def _decode_data_url(self, url: str, label: str) -> bytes:
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise InvalidRequest(
                f"{label}: unsupported data URL; expected data:image/<type>;base64,<data>"
            )
        # Line-wrapped base64 (as `base64` and encodebytes write it) is fine.
        payload = "".join(match.group(2).split())
        # Every 4 base64 characters carry 3 bytes: refuse before decoding anything large.
        if (len(payload) // 4) * 3 - 2 > self._policy.max_bytes:
            raise self._too_large(label)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"{label}: invalid base64 data") from exc
        if len(data) > self._policy.max_bytes:
            raise self._too_large(label)
        return data

    # -- http(s) ------------------------------------------------------------------------------

    def _too_large(self, label: str) -> InvalidRequest:
        return InvalidRequest(f"{label}: is larger than the {self._policy.max_bytes}-byte limit")

    def _checked_url(self, url: str | httpx.URL, label: str, *, redirect: bool) -> httpx.URL:
        return checked_url(url, label, self._allowed, redirect=redirect)

    async def _download(self, url: str, label: str) -> bytes:
        target = self._checked_url(url, label, redirect=False)
        try:
            with anyio.fail_after(self._policy.timeout_seconds):
                return await self._follow(target, label)
        except BlockedAddressError as exc:
            raise InvalidRequest(f"{label}: points to a private or local address") from exc
        except HostNotFoundError as exc:
            raise InvalidRequest(f"{label}: could not be fetched (host not found)") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise InvalidRequest(f"{label}: could not be fetched (timeout)") from exc
        except httpx.ConnectError as exc:
            raise InvalidRequest(f"{label}: could not be fetched (connection failed)") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise InvalidRequest(f"{label}: could not be fetched (network error)") from exc

    async def _follow(self, url: httpx.URL, label: str) -> bytes:
        for _hop in range(self._policy.max_redirects + 1):
            request = self._client.build_request("GET", url)
            response = await self._client.send(request, stream=True)
            try:
                status = response.status_code
                location = response.headers.get("location")
                if status in _REDIRECT_STATUSES and location:
                    try:
                        next_url = response.url.join(location)
                    except (httpx.InvalidURL, ValueError) as exc:
                        raise InvalidRequest(f"{label}: redirects to an invalid URL") from exc
                    url = self._checked_url(next_url, label, redirect=True)
                    continue
                if not 200 <= status < 300:
                    raise InvalidRequest(f"{label}: could not be fetched (HTTP {status})")
                return await self._read_body(response, label)
            finally:
                await response.aclose()
        raise InvalidRequest(f"{label}: too many redirects (limit {self._policy.max_redirects})")

    async def _read_body(self, response: httpx.Response, label: str) -> bytes:
        limit = self._policy.max_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(label)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # We asked for identity; decompressing would need its own bomb limits.
            raise InvalidRequest(f"{label}: could not be fetched (unsupported Content-Encoding)")
        if response.is_stream_consumed:  # a transport that built the body eagerly (mocks)
            if len(response.content) > limit:
                raise self._too_large(label)
            return response.content
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > limit:
                raise self._too_large(label)
        return bytes(body)
