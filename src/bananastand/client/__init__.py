"""A small Python client for the Nano Banana API (as served by Bananastand).

    from bananastand.client import Client

    with Client("http://127.0.0.1:8000", "nb_…") as nb:
        result = nb.generate("A cute orange cat sitting on a windowsill")
        paths = nb.download(result, "out/")

`Client` methods: `generate` (sync or async mode), `stream` and `resume`
(a stream's events, the latter after a `last_event_id`), `get`, `wait`,
`cancel`, `list_generations` / `iter_generations` (history, a page at a time),
`download`, `models`, `credits`. `AsyncClient` has the same methods as
coroutines (the streams and `iter_generations` are async iterators).

Results are frozen dataclasses with snake_case attributes; failures raise
`BananastandAPIError` subclasses chosen by the body's `type` (the tree is in
`_errors`). 429 and 503 answers are retried after their `Retry-After`, at most
`max_retries` times; a POST that may be retried carries an `Idempotency-Key`
(yours, or one made for that call), so a retry is never charged twice. The API
key is sent only in the Authorization header: it never appears in a repr, an
exception or a log line.
"""

from bananastand.client._errors import (
    APIConnectionError,
    AuthenticationError,
    BananastandAPIError,
    BananastandClientError,
    ConflictError,
    GenerationFailedError,
    GoneError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentProviderError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ServerBusyError,
    StreamInterruptedError,
    TooManyAttemptsError,
    WaitTimeoutError,
)
from bananastand.client._http import AsyncClient, Client
from bananastand.client._types import (
    DEFAULT_BASE_URL,
    Cancellation,
    Generation,
    GenerationPage,
    GenerationRecord,
    Model,
    StreamEvent,
    StreamEventData,
    file_to_data_url,
    image_filename,
    parse_sse_line,
)
from bananastand.retry_after import parse_retry_after

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BananastandAPIError",
    "BananastandClientError",
    "Cancellation",
    "Client",
    "ConflictError",
    "Generation",
    "GenerationFailedError",
    "GenerationPage",
    "GenerationRecord",
    "GoneError",
    "IdempotencyConflictError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "Model",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentProviderError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerBusyError",
    "StreamEvent",
    "StreamEventData",
    "StreamInterruptedError",
    "TooManyAttemptsError",
    "WaitTimeoutError",
    "file_to_data_url",
    "image_filename",
    "parse_retry_after",
    "parse_sse_line",
]
