"""A small Python client for the Nano Banana API (as served by Bananastand).

    from bananastand.client import Client

    with Client("http://127.0.0.1:8000", "nb_…") as nb:
        result = nb.generate("A cute orange cat sitting on a windowsill")
        paths = nb.download(result, "out/")

`AsyncClient` has the same methods as coroutines (`stream` is an async
iterator). Results are frozen dataclasses with snake_case attributes; failures
raise `BananastandAPIError` subclasses chosen by the body's `type`. 429 and 503
answers are retried after their `Retry-After`, at most `max_retries` times.
The API key is sent only in the Authorization header: it never appears in a
repr, an exception or a log line.
"""

from bananastand.client._errors import (
    APIConnectionError,
    AuthenticationError,
    BananastandAPIError,
    BananastandClientError,
    GenerationFailedError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerBusyError,
    WaitTimeoutError,
)
from bananastand.client._http import AsyncClient, Client
from bananastand.client._types import (
    DEFAULT_BASE_URL,
    Generation,
    GenerationRecord,
    Model,
    StreamEvent,
    StreamEventData,
    file_to_data_url,
    image_filename,
    parse_retry_after,
    parse_sse_line,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BananastandAPIError",
    "BananastandClientError",
    "Client",
    "Generation",
    "GenerationFailedError",
    "GenerationRecord",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerBusyError",
    "StreamEvent",
    "StreamEventData",
    "WaitTimeoutError",
    "file_to_data_url",
    "image_filename",
    "parse_retry_after",
    "parse_sse_line",
]
