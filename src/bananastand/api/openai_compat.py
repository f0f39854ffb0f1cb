"""OpenAI-compatible image endpoints: POST /v1/images/generations and
POST /v1/images/edits.

Clients written for OpenAI's Images API (the official SDKs included) use the
same `nb_…` keys, the same model catalogue, credits and concurrency limits:
each call is one sync generation. Errors keep OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`, `code` is Bananastand's
error type) with the contract's statuses; the contract endpoints are untouched.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.message import Message
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bananastand.accounts import Caller
from bananastand.api.direct import KEY, DirectRoute, caller
from bananastand.api.errors import from_http_exception, openai_error_response
from bananastand.aspect_ratios import nearest_ratio
from bananastand.catalog import ModelSpec
from bananastand.container import Services
from bananastand.contract_json import image_urls
from bananastand.errors import BananastandError, GenerationFailed, InvalidRequest
from bananastand.storage import image_key
from bananastand.validation import GenerateParams

log = logging.getLogger(__name__)

# OpenAI's fixed sizes and the ratios they stand for.
_SIZES = {
    (1024, 1024): "1:1",
    (1536, 1024): "3:2",
    (1024, 1536): "2:3",
    (1792, 1024): "16:9",
    (1024, 1792): "9:16",
}
_MAX_SIDE = 100_000
_MAX_PARTS = 64
_RESPONSE_FORMATS = ("url", "b64_json")


def openai_error(
    status: int,
    message: str,
    code: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """An error of this module's own making, in OpenAI's shape."""
    error = BananastandError(message, headers=headers, extra=extra)
    error.status = status  # type: ignore[misc]
    error.type = code  # type: ignore[misc]
    return openai_error_response(error)


class OpenAIErrorRoute(DirectRoute):
    """Renders every error of these routes (auth included) in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except BananastandError as exc:
                return openai_error_response(exc)
            except StarletteHTTPException as exc:  # e.g. 413 from the body size limit
                return openai_error_response(from_http_exception(exc))
            except Exception:
                log.exception("internal error on %s %s", request.method, request.url.path)
                return openai_error(500, "Internal server error", "internal_error")

        return route


router = APIRouter(prefix="/v1/images", tags=["openai"], route_class=OpenAIErrorRoute)


@dataclass(frozen=True)
class _Request:
    prompt: Any
    model: str | None
    n: Any
    size: str | None
    response_format: str
    references: list[str]


# --- parsing ----------------------------------------------------------------------


def _optional_str(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    return value


def _n(value: Any) -> int | None:
    """`n` as OpenAI takes it: an integer from 1 to 10 (form fields arrive as text);
    the model's own maximum then caps it, as `quantity` is capped."""
    if value is None:
        return None
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidRequest("n must be an integer") from None
    if isinstance(number, bool) or not isinstance(number, int | float) or math.isnan(number):
        raise InvalidRequest("n must be an integer")
    if not float(number).is_integer():
        raise InvalidRequest("n must be an integer")
    if not 1 <= number <= 10:
        raise InvalidRequest("n must be between 1 and 10")
    return int(number)


def _response_format(value: Any) -> str:
    fmt = _optional_str(value, "response_format") or "url"
    if fmt not in _RESPONSE_FORMATS:
        raise InvalidRequest("response_format must be 'url' or 'b64_json'")
    return fmt


def _stream_flag(value: Any) -> None:
    if value in (True, "true", "True", "1"):
        raise InvalidRequest("stream is not supported by this server; omit it")


def aspect_ratio_for(size: str | None, model: ModelSpec) -> str:
    """OpenAI's `size` (`WxH` or `auto`) as one of the model's aspect ratios."""
    if size is None or not size.strip() or size.strip().lower() == "auto":
        return "default"
    try:
        w_text, h_text = size.strip().lower().split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise InvalidRequest(f"size must be 'WIDTHxHEIGHT' or 'auto' (got {size!r})") from None
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise InvalidRequest(f"size {size!r} is out of range")
    if not model.supports_aspect_ratio or not model.aspect_ratios:
        if width == height:
            return "default"
        raise InvalidRequest(
            f"The model {model.name!r} has no aspect ratios; use a square size or 'auto'"
        )
    named = _SIZES.get((width, height))
    if named in model.aspect_ratios:
        return named
    return nearest_ratio(width, height, model.aspect_ratios)


async def _json_request(request: Request) -> _Request:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("A JSON request body is required")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Malformed JSON in the request body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    _stream_flag(body.get("stream"))
    return _Request(
        prompt=body.get("prompt"),
        model=_optional_str(body.get("model"), "model"),
        n=_n(body.get("n")),
        size=_optional_str(body.get("size"), "size"),
        response_format=_response_format(body.get("response_format")),
        references=[],
    )


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(body: bytes, content_type: str, *, max_parts: int = _MAX_PARTS) -> list[_Part]:
    """A multipart/form-data body as its parts (python-multipart is not installed).
    The body is already capped by the server's body size limit."""
    header = Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise InvalidRequest("Expected a multipart/form-data body")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 200:
        raise InvalidRequest("multipart/form-data body without a valid boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2:
        raise InvalidRequest("Malformed multipart/form-data body")
    parts: list[_Part] = []
    headers_parser = email.parser.BytesHeaderParser(policy=email.policy.HTTP)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter; anything after it is an epilogue
        padding, _, rest = chunk.partition(b"\r\n")
        head, separator, data = rest.partition(b"\r\n\r\n")
        if padding.strip(b" \t") or not separator:
            raise InvalidRequest("Malformed multipart/form-data body")
        if len(parts) >= max_parts:
            raise InvalidRequest(f"Too many multipart fields (at most {max_parts})")
        headers = headers_parser.parsebytes(head + b"\r\n\r\n")
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise InvalidRequest("A multipart field without Content-Disposition")
        params = disposition.params
        name = params.get("name")
        if not name:
            raise InvalidRequest("A multipart field without a name")
        parts.append(
            _Part(
                name=str(name),
                filename=params.get("filename"),
                content_type=headers.get_content_type()
                if headers.get("content-type")
                else "text/plain",
                data=data,
            )
        )
    else:
        raise InvalidRequest("Malformed multipart/form-data body (no closing boundary)")
    return parts


def _text(part: _Part) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{part.name} must be UTF-8 text") from None


def _image_data_url(part: _Part) -> str:
    mime = part.content_type.lower()
    if not mime.startswith("image/"):
        # SDKs send application/octet-stream for files without a known type;
        # the reference check below reads the bytes themselves.
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(part.data).decode("ascii")


async def _form_request(request: Request) -> _Request:
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    parts = parse_multipart(body, content_type)
    fields: dict[str, str] = {}
    references: list[str] = []
    for part in parts:
        if part.name in ("image", "image[]"):
            if not part.data:
                raise InvalidRequest("An uploaded image is empty")
            references.append(_image_data_url(part))
        elif part.name == "mask":
            continue  # accepted and ignored: these models edit from the prompt
        elif part.filename is None:
            fields.setdefault(part.name, _text(part))
    if not references:
        raise InvalidRequest("image is required: upload one or more image files")
    _stream_flag(fields.get("stream"))
    return _Request(
        prompt=fields.get("prompt"),
        model=fields.get("model"),
        n=_n(fields.get("n")),
        size=fields.get("size"),
        response_format=_response_format(fields.get("response_format")),
        references=references,
    )


# --- running ------------------------------------------------------------------------


async def _run(services: Services, caller: Caller, req: _Request) -> Response:
    service = services.generation
    model = service.catalog.get(
        (req.model or "").strip() or services.settings.default_model
    )  # unknown model: 400 before anything else
    submission = await service.submit(
        caller,
        GenerateParams(
            prompt=req.prompt,
            selected_model=model.name,
            reference_image_urls=req.references or None,
            aspect_ratio=aspect_ratio_for(req.size, model),
            quantity=req.n,
            mode="sync",
        ),
        references_field="image",  # errors name the uploads as the caller sent them
    )
    final, _balance = await service.outcome(submission.record.id)
    headers = {"X-Generation-Id": final.id}
    if final.state == "failed":
        raise GenerationFailed(
            final.error_message or "Generation failed",
            extra={"generation_id": final.id},
            headers=headers,
        )
    if final.warning_message:
        return openai_error(
            400,
            final.warning_message,
            "moderation_blocked",
            headers=headers,
            extra={"generation_id": final.id},
        )
    if req.response_format == "b64_json":
        data = [{"b64_json": await _b64(services, i.id, i.extension)} for i in final.images]
    else:
        data = [{"url": url} for url in image_urls(final, service.signer)]
    created = int(final.created_at.timestamp()) if final.created_at else int(time.time())
    return JSONResponse({"created": created, "data": data}, headers=headers)


async def _b64(services: Services, image_id: str, extension: str) -> str:
    data = await services.generation.storage.get(image_key(image_id, extension))
    if data is None:
        raise BananastandError("A generated image could not be read back")
    return base64.b64encode(data).decode("ascii")


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": "OpenAI-shaped error: {error: {message, type, param, code}}"}
    for status in (400, 401, 402, 403, 413, 429, 502)
}


@router.post(
    "/generations",
    summary="Create images (OpenAI-compatible)",
    openapi_extra={
        **KEY,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["prompt"],
                        "properties": {
                            "prompt": {"type": "string"},
                            "model": {"type": "string"},
                            "n": {"type": "integer", "minimum": 1, "maximum": 10},
                            "size": {"type": "string", "example": "1024x1024"},
                            "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                        },
                    }
                }
            },
        },
    },
    responses=_ERRORS,
)
async def create_images(request: Request) -> Response:
    who = await caller(request)
    return await _run(request.app.state.services, who, await _json_request(request))


@router.post(
    "/edits",
    summary="Edit images: uploaded images are reference images (OpenAI-compatible)",
    openapi_extra={
        **KEY,
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["prompt", "image"],
                        "properties": {
                            "image": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            },
                            "prompt": {"type": "string"},
                            "model": {"type": "string"},
                            "n": {"type": "integer"},
                            "size": {"type": "string"},
                            "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                        },
                    }
                }
            },
        },
    },
    responses=_ERRORS,
)
async def edit_images(request: Request) -> Response:
    who = await caller(request)
    return await _run(request.app.state.services, who, await _form_request(request))
