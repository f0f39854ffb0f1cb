"""The client's exceptions: one class per error `type` the server answers.

    BananastandClientError
    ├── APIConnectionError               the server could not be reached
    │   └── StreamInterruptedError       a stream broke before its final event
    ├── WaitTimeoutError                 wait() gave up (also a TimeoutError)
    └── BananastandAPIError              an error answer: status, type, message, retry_after
        ├── InvalidRequestError          400 invalid_request, model_unavailable,
        │                                    invalid_signature (also 405, 415, 431)
        ├── AuthenticationError          401 unauthorized
        ├── InsufficientCreditsError     402 insufficient_credits
        ├── PermissionDeniedError        403 forbidden, api_access_disabled, pro_required
        ├── NotFoundError                404 not_found
        ├── RequestTimeoutError          408 request_timeout
        ├── ConflictError                409 conflict
        │   └── IdempotencyConflictError 409 idempotency_conflict
        ├── GoneError                    410 expired
        ├── PayloadTooLargeError         413 payload_too_large
        ├── RateLimitError               429 concurrency_limit
        │   └── TooManyAttemptsError     429 too_many_attempts
        ├── InternalServerError          500 internal_error (and other 5xx)
        ├── GenerationFailedError        502 generation_failed
        ├── PaymentProviderError         502 payment_provider_error
        └── ServerBusyError              503 server_busy

A body's `type` chooses the class; an unknown or missing one falls back on the
status.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from bananastand.retry_after import parse_retry_after


class BananastandClientError(Exception):
    """Base of every error this package raises."""


class APIConnectionError(BananastandClientError):
    """The server could not be reached, or the connection broke."""


class StreamInterruptedError(APIConnectionError):
    """A stream ended before its `complete` or `error` event. The generation goes on
    on the server: `resume(generation_id, last_event_id=…)` picks the stream up."""

    def __init__(
        self, message: str, *, generation_id: str | None, last_event_id: int | None
    ) -> None:
        super().__init__(message)
        self.generation_id = generation_id
        self.last_event_id = last_event_id


class WaitTimeoutError(BananastandClientError, TimeoutError):
    """`wait()` gave up before the generation reached a terminal state."""

    def __init__(self, generation_id: str, timeout: float) -> None:
        super().__init__(f"generation {generation_id} still processing after {timeout:g}s")
        self.generation_id = generation_id
        self.timeout = timeout


class BananastandAPIError(BananastandClientError):
    """The server answered with an error status (or an error body)."""

    def __init__(
        self,
        status: int,
        type: str | None,
        message: str,
        body: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.body = body or {}
        self.retry_after = retry_after  # seconds, from the answer's Retry-After

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, type={self.type!r}, {self.message!r})"


class InvalidRequestError(BananastandAPIError):
    """400: invalid parameters (also 405, 415 and 431: a request the API does not take)."""


class AuthenticationError(BananastandAPIError):
    """401: missing, unknown or revoked API key."""


class InsufficientCreditsError(BananastandAPIError):
    """402: the balance does not cover the generation."""


class PermissionDeniedError(BananastandAPIError):
    """403: API access not enabled (or the model needs a Pro account)."""


class NotFoundError(BananastandAPIError):
    """404: unknown generation id (or another account's)."""


class RequestTimeoutError(BananastandAPIError):
    """408: the request's body did not arrive in time."""


class ConflictError(BananastandAPIError):
    """409: the request conflicts with the server's state."""


class IdempotencyConflictError(ConflictError):
    """409: this Idempotency-Key was used with a different request in the last 24 hours."""


class GoneError(BananastandAPIError):
    """410: an image link that expired."""


class PayloadTooLargeError(BananastandAPIError):
    """413: the request body is over the server's limit (large reference images)."""


class RateLimitError(BananastandAPIError):
    """429: the account's concurrency limit is reached."""

    def __init__(
        self,
        status: int,
        type: str | None,
        message: str,
        body: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, type, message, body, retry_after=retry_after)
        self.limit: int | None = _int_or_none(self.body.get("limit"))
        self.active: int | None = _int_or_none(self.body.get("active"))


class TooManyAttemptsError(RateLimitError):
    """429: too many attempts (sign-in, key checks) in a short time."""


class InternalServerError(BananastandAPIError):
    """500 (or another 5xx): the server failed."""


class GenerationFailedError(BananastandAPIError):
    """502: the generation failed; its credits were refunded."""

    def __init__(
        self,
        status: int,
        type: str | None,
        message: str,
        body: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, type, message, body, retry_after=retry_after)
        generation_id = self.body.get("generationId")
        self.generation_id: str | None = generation_id if isinstance(generation_id, str) else None


class PaymentProviderError(BananastandAPIError):
    """502: the payment provider could not be reached; nothing was charged."""


class ServerBusyError(BananastandAPIError):
    """503: the async queue is full (or the database is unreachable): retry later."""


_BY_TYPE: dict[str, type[BananastandAPIError]] = {
    "invalid_request": InvalidRequestError,
    "model_unavailable": InvalidRequestError,
    "invalid_signature": InvalidRequestError,
    "method_not_allowed": InvalidRequestError,
    "unsupported_media_type": InvalidRequestError,
    "headers_too_large": InvalidRequestError,
    "unauthorized": AuthenticationError,
    "insufficient_credits": InsufficientCreditsError,
    "forbidden": PermissionDeniedError,
    "api_access_disabled": PermissionDeniedError,
    "pro_required": PermissionDeniedError,
    "not_found": NotFoundError,
    "request_timeout": RequestTimeoutError,
    "conflict": ConflictError,
    "idempotency_conflict": IdempotencyConflictError,
    "expired": GoneError,
    "payload_too_large": PayloadTooLargeError,
    "concurrency_limit": RateLimitError,
    "too_many_attempts": TooManyAttemptsError,
    "internal_error": InternalServerError,
    "generation_failed": GenerationFailedError,
    "payment_provider_error": PaymentProviderError,
    "server_busy": ServerBusyError,
}
_BY_STATUS: dict[int, type[BananastandAPIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: InvalidRequestError,
    408: RequestTimeoutError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    415: InvalidRequestError,
    429: RateLimitError,
    431: InvalidRequestError,
    500: InternalServerError,
    502: GenerationFailedError,
    503: ServerBusyError,
}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_from_response(
    status: int, content: bytes, headers: httpx.Headers
) -> BananastandAPIError:
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
    retry_after = parse_retry_after(headers.get("Retry-After"))
    return cls(status, kind, message, body, retry_after=retry_after)
