"""`Client` and `AsyncClient`: the same methods, blocking and as coroutines."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx

from bananastand.client._errors import (
    APIConnectionError,
    BananastandAPIError,
    StreamInterruptedError,
    WaitTimeoutError,
    _error_from_response,
)
from bananastand.client._types import (
    _STREAM_CUT,
    API_PREFIX,
    DEFAULT_BASE_URL,
    MAX_RETRY_DELAY,
    RETRY_STATUSES,
    Cancellation,
    Downloadable,
    Generation,
    GenerationPage,
    GenerationRecord,
    Model,
    StreamEvent,
    _download_targets,
    _EventReader,
    _generate_body,
    image_filename,
)
from bananastand.retry_after import parse_retry_after

# POST stream: number the events (`id:` lines), so a broken stream can be resumed.
_EVENT_IDS = {"X-Stream-Event-Ids": "true"}


class _Base:
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
    ) -> None:
        base = base_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.base_url = base
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "bananastand-client"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers | extra if extra else headers

    def _url(self, path: str) -> str:
        return f"{API_PREFIX}{path}"

    def _idempotency(self, key: str | None) -> dict[str, str]:
        """The Idempotency-Key header of one POST: the caller's key, else (when the
        POST may be retried) a fresh one, the same for all its retries."""
        if key is None and self.max_retries > 0:
            key = uuid.uuid4().hex
        return {"Idempotency-Key": key} if key is not None else {}

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None to not retry."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is None:
            delay = min(2.0**attempt, MAX_RETRY_DELAY)
        return min(delay, MAX_RETRY_DELAY)

    def _next_poll(self, interval: float) -> float:
        return min(interval * 2, self.max_poll_interval)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise _error_from_response(response.status_code, response.content, response.headers)


def _json(response: httpx.Response) -> Any:
    _raise_for(response)
    try:
        return response.json()
    except ValueError:
        raise BananastandAPIError(
            response.status_code, None, "the server answered with invalid JSON"
        ) from None


def _check_mode(mode: str) -> None:
    if mode not in ("sync", "async"):
        raise ValueError("generate() takes mode 'sync' or 'async'; use stream() to stream")


def _cut(response: httpx.Response, reader: _EventReader) -> StreamInterruptedError:
    return StreamInterruptedError(
        _STREAM_CUT,
        generation_id=response.headers.get("X-Generation-Id"),
        last_event_id=reader.last_id,
    )


def _resume_request(
    generation_id: str, last_event_id: int | None, previews: bool | None
) -> tuple[dict[str, str], dict[str, str]]:
    params = {"id": generation_id}
    if previews is not None:
        params["previews"] = "true" if previews else "false"
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    return params, headers


# --- the sync client ---------------------------------------------------------------


class Client(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, self._url(path), headers=self._headers(headers), **kwargs
                )
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from None
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return response
            attempt += 1
            self._sleep(delay)

    def _events(
        self, method: str, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> Iterator[StreamEvent]:
        attempt = 0
        while True:
            try:
                with self._http.stream(
                    method, self._url(path), headers=self._headers(headers), **kwargs
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        delay = self._retry_delay(response, attempt)
                        if delay is None:
                            _raise_for(response)
                            return
                    elif response.status_code == 204:  # resumed after the final event
                        return
                    else:
                        reader = _EventReader()
                        for line in response.iter_lines():
                            event = reader.feed(line)
                            if event is not None:
                                yield event
                                if event.is_final:
                                    return
                        raise _cut(response, reader)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"connection to {self.base_url} broke: {exc}") from None
            attempt += 1
            self._sleep(delay)

    def models(self) -> list[Model]:
        data = _json(self._send("GET", "/models"))
        return [Model.from_json(item) for item in data.get("data", [])]

    def credits(self) -> int:
        return int(_json(self._send("GET", "/credits"))["data"]["credits"])

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        mode: Literal["sync", "async"] = "sync",
        seed: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Generation:
        """sync: waits for the images; async: returns as soon as it is accepted.
        A repeat with the same `idempotency_key` (24 hours) is answered with the
        first request's generation, never charged twice."""
        _check_mode(mode)
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode=mode,
            seed=seed,
            callback_url=callback_url,
        )
        headers = self._idempotency(idempotency_key)
        return Generation.from_json(
            _json(self._send("POST", "/generate", json=body, headers=headers))
        )

    def stream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        seed: int | None = None,
        callback_url: str | None = None,
        previews: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Iterator[StreamEvent]:
        """The generation's events as they arrive; the last is `complete` or `error`.
        `previews=False` leaves the status events' preview images out. A broken
        stream raises `StreamInterruptedError`, whose ids `resume()` takes."""
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode="stream",
            seed=seed,
            callback_url=callback_url,
            previews=previews,
        )
        headers = _EVENT_IDS | self._idempotency(idempotency_key)
        return self._events("POST", "/generate", headers=headers, json=body)

    def resume(
        self,
        generation_id: str,
        *,
        last_event_id: int | None = None,
        previews: bool | None = None,
    ) -> Iterator[StreamEvent]:
        """Follow a generation's stream: from its start, or after `last_event_id`
        (nothing when that was the final event)."""
        params, headers = _resume_request(generation_id, last_event_id, previews)
        return self._events("GET", "/generate/stream", headers=headers, params=params)

    def get(self, generation_id: str) -> GenerationRecord:
        response = self._send("GET", "/generate", params={"id": generation_id})
        return GenerationRecord.from_json(_json(response)["data"])

    def cancel(self, generation_id: str) -> Cancellation:
        """Cancel a waiting or running generation (what it did not make is refunded)."""
        response = self._send("DELETE", "/generate", params={"id": generation_id})
        return Cancellation.from_json(_json(response))

    def list_generations(self, *, limit: int = 20, before: str | None = None) -> GenerationPage:
        """One page of the account's generations, newest first; pass the page's
        `next_before` as `before` for the next one."""
        params: dict[str, str | int] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return GenerationPage.from_json(_json(self._send("GET", "/generations", params=params)))

    def iter_generations(self, *, page_size: int = 100) -> Iterator[GenerationRecord]:
        """Every generation of the account, newest first, a page at a time."""
        before: str | None = None
        while True:
            page = self.list_generations(limit=page_size, before=before)
            yield from page.records
            if page.next_before is None:
                return
            before = page.next_before

    def wait(
        self,
        generation_id: str,
        *,
        timeout: float = 600.0,
        clock: Callable[[], float] | None = None,
    ) -> GenerationRecord:
        """Poll (exponential backoff) until the generation is completed or failed."""
        now = clock or time.monotonic
        deadline = now() + timeout
        interval = self.poll_interval
        while True:
            record = self.get(generation_id)
            if record.is_terminal:
                return record
            left = deadline - now()
            if left <= 0:
                raise WaitTimeoutError(generation_id, timeout)
            self._sleep(min(interval * (0.9 + 0.2 * random.random()), left))
            interval = self._next_poll(interval)

    def download(
        self, source: Downloadable, folder: str | Path, *, generation_id: str | None = None
    ) -> list[Path]:
        """Save the images into `folder` as `{generationId}_{i}{ext}`; their paths."""
        gid, urls = _download_targets(source, generation_id)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, url in enumerate(urls):
            try:
                response = self._http.get(url)  # image URLs are signed: no key sent
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot download an image: {exc}") from None
            _raise_for(response)
            path = folder / image_filename(gid, index, url)
            path.write_bytes(response.content)
            paths.append(path)
        return paths


# --- the async client --------------------------------------------------------------


class AsyncClient(_Base):
    """The same API as `Client`, with coroutines (`stream`, `resume` and
    `iter_generations` are async iterators)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, self._url(path), headers=self._headers(headers), **kwargs
                )
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from None
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return response
            attempt += 1
            await self._sleep(delay)

    async def _events(
        self, method: str, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> AsyncIterator[StreamEvent]:
        attempt = 0
        while True:
            try:
                async with self._http.stream(
                    method, self._url(path), headers=self._headers(headers), **kwargs
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        delay = self._retry_delay(response, attempt)
                        if delay is None:
                            _raise_for(response)
                            return
                    elif response.status_code == 204:
                        return
                    else:
                        reader = _EventReader()
                        async for line in response.aiter_lines():
                            event = reader.feed(line)
                            if event is not None:
                                yield event
                                if event.is_final:
                                    return
                        raise _cut(response, reader)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"connection to {self.base_url} broke: {exc}") from None
            attempt += 1
            await self._sleep(delay)

    async def models(self) -> list[Model]:
        data = _json(await self._send("GET", "/models"))
        return [Model.from_json(item) for item in data.get("data", [])]

    async def credits(self) -> int:
        return int(_json(await self._send("GET", "/credits"))["data"]["credits"])

    async def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        mode: Literal["sync", "async"] = "sync",
        seed: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Generation:
        _check_mode(mode)
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode=mode,
            seed=seed,
            callback_url=callback_url,
        )
        headers = self._idempotency(idempotency_key)
        response = await self._send("POST", "/generate", json=body, headers=headers)
        return Generation.from_json(_json(response))

    def stream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        seed: int | None = None,
        callback_url: str | None = None,
        previews: bool | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode="stream",
            seed=seed,
            callback_url=callback_url,
            previews=previews,
        )
        headers = _EVENT_IDS | self._idempotency(idempotency_key)
        return self._events("POST", "/generate", headers=headers, json=body)

    def resume(
        self,
        generation_id: str,
        *,
        last_event_id: int | None = None,
        previews: bool | None = None,
    ) -> AsyncIterator[StreamEvent]:
        params, headers = _resume_request(generation_id, last_event_id, previews)
        return self._events("GET", "/generate/stream", headers=headers, params=params)

    async def get(self, generation_id: str) -> GenerationRecord:
        response = await self._send("GET", "/generate", params={"id": generation_id})
        return GenerationRecord.from_json(_json(response)["data"])

    async def cancel(self, generation_id: str) -> Cancellation:
        response = await self._send("DELETE", "/generate", params={"id": generation_id})
        return Cancellation.from_json(_json(response))

    async def list_generations(
        self, *, limit: int = 20, before: str | None = None
    ) -> GenerationPage:
        params: dict[str, str | int] = {"limit": limit}
        if before is not None:
            params["before"] = before
        response = await self._send("GET", "/generations", params=params)
        return GenerationPage.from_json(_json(response))

    async def iter_generations(self, *, page_size: int = 100) -> AsyncIterator[GenerationRecord]:
        before: str | None = None
        while True:
            page = await self.list_generations(limit=page_size, before=before)
            for record in page.records:
                yield record
            if page.next_before is None:
                return
            before = page.next_before

    async def wait(
        self,
        generation_id: str,
        *,
        timeout: float = 600.0,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
        clock: Callable[[], float] | None = None,
    ) -> GenerationRecord:
        now = clock or time.monotonic
        deadline = now() + timeout
        interval = self.poll_interval
        while True:
            record = await self.get(generation_id)
            if record.is_terminal:
                return record
            left = deadline - now()
            if left <= 0:
                raise WaitTimeoutError(generation_id, timeout)
            await self._sleep(min(interval * (0.9 + 0.2 * random.random()), left))
            interval = self._next_poll(interval)

    async def download(
        self, source: Downloadable, folder: str | Path, *, generation_id: str | None = None
    ) -> list[Path]:
        gid, urls = _download_targets(source, generation_id)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, url in enumerate(urls):
            try:
                response = await self._http.get(url)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot download an image: {exc}") from None
            _raise_for(response)
            path = folder / image_filename(gid, index, url)
            path.write_bytes(response.content)
            paths.append(path)
        return paths
