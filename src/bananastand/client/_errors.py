"""The client's exceptions, one per error `type` of the API."""

from __future__ import annotations

import json
from typing import Any

import httpx

from bananastand.client._types import parse_retry_after

# --- errors ------------------------------------------------------------------------


class BananastandClientError(Exception):
    """Base of every error this module raises."""


class APIConnectionError(BananastandClientError):
    """The server could not be reached, or the connection broke."""


class WaitTimeoutError(BananastandClientError, TimeoutError):
    """`wait()` gave up before the generation reached a terminal state."""

    def __init__(self, generation_id: str, timeout: float) -> None:
        super().__init__(f"generation {generation_id} still processing after {timeout:g}s")
        self.generation_id = generation_id
        self.timeout = timeout


class BananastandAPIError(BananastandClientError):
    """The server answered with an error status (or an error body)."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.body = body or {}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, type={self.type!r}, {self.message!r})"


class InvalidRequestError(BananastandAPIError):
    """400: invalid parameters."""


class AuthenticationError(BananastandAPIError):
    """401: missing, unknown or revoked API key."""


class InsufficientCreditsError(BananastandAPIError):
    """402: the balance does not cover the generation."""


class PermissionDeniedError(BananastandAPIError):
    """403: API access not enabled (or the model needs a Pro account)."""


class NotFoundError(BananastandAPIError):
    """404: unknown generation id (or another account's)."""


class RateLimitError(BananastandAPIError):
    """429: the account's concurrency limit is reached."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, type, message, body)
        self.limit: int | None = _int_or_none(self.body.get("limit"))
        self.active: int | None = _int_or_none(self.body.get("active"))
        self.retry_after: float | None = None


class GenerationFailedError(BananastandAPIError):
    """502: the generation failed; its credits were refunded."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, type, message, body)
        self.generation_id: str | None = self.body.get("generationId")


class ServerBusyError(BananastandAPIError):
    """503: the async queue is full."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, type, message, body)
        self.retry_after: float | None = None


class InternalServerError(BananastandAPIError):
    """500 (or another 5xx): the server failed."""


_BY_TYPE: dict[str, type[BananastandAPIError]] = {
    "invalid_request": InvalidRequestError,
    "model_unavailable": InvalidRequestError,
    "unauthorized": AuthenticationError,
    "insufficient_credits": InsufficientCreditsError,
    "forbidden": PermissionDeniedError,
    "api_access_disabled": PermissionDeniedError,
    "pro_required": PermissionDeniedError,
    "not_found": NotFoundError,
    "concurrency_limit": RateLimitError,
    "generation_failed": GenerationFailedError,
    "server_busy": ServerBusyError,
    "internal_error": InternalServerError,
}
_BY_STATUS: dict[int, type[BananastandAPIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
    500: InternalServerError,
    502: GenerationFailedError,
    503: ServerBusyError,
}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_from_response(status: int, content: bytes, headers: httpx.Headers) -> BananastandAPIError:
    """The exception for an error answer: by the body's `type`, else by status."""
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    kind = body.get("type") if isinstance(body.get("type"), str) else None
    message = body.get("error") or body.get("message")
    if not isinstance(message, str) or not message:
        message = f"HTTP {status}"
    cls = _BY_TYPE.get(kind or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else BananastandAPIError
    error = cls(status, kind, message, body)
    if isinstance(error, RateLimitError | ServerBusyError):
        error.retry_after = parse_retry_after(headers.get("Retry-After"))
    return error
