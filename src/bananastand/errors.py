"""Domain errors, one small tree; `api.errors` turns them into the contract's JSON.

    BananastandError                 500 internal_error
    ├── InvalidRequest               400 invalid_request
    │   ├── ModelUnavailable         400 model_unavailable
    │   └── InvalidSignature         400 invalid_signature
    ├── Unauthorized                 401 unauthorized
    ├── InsufficientCredits          402 insufficient_credits
    ├── Forbidden                    403 forbidden
    │   ├── ApiAccessDisabled        403 api_access_disabled
    │   └── ProRequired              403 pro_required
    ├── NotFound                     404 not_found
    ├── Conflict                     409 conflict
    │   └── IdempotencyConflict      409 idempotency_conflict
    ├── Gone                         410 expired
    ├── PayloadTooLarge              413 payload_too_large
    ├── ConcurrencyLimitExceeded     429 concurrency_limit
    ├── TooManyAttempts              429 too_many_attempts
    ├── GenerationFailed             502 generation_failed
    ├── PaymentProviderError         502 payment_provider_error
    └── ServerBusy                   503 server_busy
        └── StorageUnavailable       503 server_busy

Every error carries a human `message`; `extra` adds fields to the body and
`headers` adds response headers. Messages are written for clients: never put a
secret or an internal detail in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class BananastandError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "type": self.type, **self.extra}


class InvalidRequest(BananastandError):
    status = 400
    type = "invalid_request"
    default_message = "Invalid request parameters"


class ModelUnavailable(InvalidRequest):
    type = "model_unavailable"
    default_message = "The selected model is not available on this server"


class InvalidSignature(InvalidRequest):
    type = "invalid_signature"
    default_message = "The webhook's signature does not verify"


class Unauthorized(BananastandError):
    status = 401
    type = "unauthorized"
    default_message = "Invalid or missing API key"


class InsufficientCredits(BananastandError):
    status = 402
    type = "insufficient_credits"
    default_message = "Insufficient credits"


class Forbidden(BananastandError):
    status = 403
    type = "forbidden"
    default_message = "Forbidden"


class ApiAccessDisabled(Forbidden):
    type = "api_access_disabled"
    default_message = "API access is not enabled for this account"


class ProRequired(Forbidden):
    type = "pro_required"
    default_message = "This model requires a Pro account"


class NotFound(BananastandError):
    status = 404
    type = "not_found"
    default_message = "Not found"


class Conflict(BananastandError):
    status = 409
    type = "conflict"
    default_message = "Conflict"


class IdempotencyConflict(Conflict):
    type = "idempotency_conflict"
    default_message = (
        "This Idempotency-Key was used with a different request body in the last 24 hours"
    )


class Gone(BananastandError):
    status = 410
    type = "expired"
    default_message = "This link has expired"


class PayloadTooLarge(BananastandError):
    status = 413
    type = "payload_too_large"
    default_message = "Request body too large"


class RequestTimeout(BananastandError):
    status = 408
    type = "request_timeout"
    default_message = "The request body did not arrive in time"


class HeadersTooLarge(BananastandError):
    status = 431
    type = "headers_too_large"
    default_message = "Request headers too large"


class ConcurrencyLimitExceeded(BananastandError):
    status = 429
    type = "concurrency_limit"
    default_message = "Too many concurrent API requests for this account"

    def __init__(self, *, limit: int, active: int, retry_after: int) -> None:
        super().__init__(
            extra={"limit": limit, "active": active},
            headers={
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Active": str(active),
            },
        )


class TooManyAttempts(BananastandError):
    status = 429
    type = "too_many_attempts"
    default_message = "Too many attempts; try again later"

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class GenerationFailed(BananastandError):
    status = 502
    type = "generation_failed"
    default_message = "Generation failed"


class PaymentProviderError(BananastandError):
    status = 502
    type = "payment_provider_error"
    default_message = "The payment provider could not be reached; nothing was charged"


class ServerBusy(BananastandError):
    status = 503
    type = "server_busy"
    default_message = "Server busy: the generation queue is full, retry later"

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageUnavailable(ServerBusy):
    """The image store (a bucket) cannot be reached or refused this server's
    credentials. Its message is for clients: the store's own error stays in the
    log (once per outage, see `storage.Outage`)."""

    default_message = "Server busy: image storage is unavailable; retry shortly"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)
