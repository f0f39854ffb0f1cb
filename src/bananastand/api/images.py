"""GET /images/{expires}/{signature}/{file}: serves generated images while
their signed URL is valid (410 after, 404 for anything forged or deleted).

`?size=thumb` asks for the image's thumbnail (see `thumbnails`) under the same
signed path, so it is exactly as valid as the image: same signature, same
expiry. The first request for it makes it (then it is kept beside the image),
and if that fails the image itself is served: never a broken picture.

The bytes come from the storage backend (`storage.Storage`) and are streamed
piece by piece, never read whole: HEAD, a single `Range` (206, 416) and
revalidation by ETag (304) work alike on a local folder and an object store.
With `storage_serve = "redirect"` an object store's image is answered with a
307 to a short-lived presigned URL of the store instead. A store that cannot be
reached is a 503 with Retry-After (`StorageUnavailable`), never a 500.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from bananastand import thumbnails
from bananastand.api import schemas
from bananastand.api.deps import ServicesDep
from bananastand.errors import NotFound
from bananastand.pipeline import GenerationService
from bananastand.storage import Stat, image_key

router = APIRouter(tags=["images"])

_MIME = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


IMAGE_PATH = "/images/{expires}/{signature}/{filename}"


@router.get(
    IMAGE_PATH,
    summary="Download a generated image",
    response_class=StreamingResponse,
    responses={
        **schemas.errors(404, 410, 503),
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
    },
)
async def get_image(
    expires: str,
    signature: str,
    filename: str,
    request: Request,
    services: ServicesDep,
    size: str | None = None,
) -> Response:
    now = time.time()
    service = services.generation
    settings = services.settings
    image_id, extension = service.signer.verify(expires, signature, filename, now=now)
    if size not in (None, thumbnails.SIZE_PARAM) or extension not in _MIME:
        raise NotFound("No such image")
    key, media_type, etag = image_key(image_id, extension), _MIME[extension], f'"{image_id}"'
    if size == thumbnails.SIZE_PARAM:
        thumb = await services.thumbnails.key_for(image_id, key)
        if thumb is not None:  # an image's bytes never change, nor its thumbnail's
            key, media_type, etag = thumb, thumbnails.MIME, f'"{image_id}.thumb"'
    max_age = max(0, int(int(expires) - now))
    headers = {
        "Cache-Control": f"public, max-age={max_age}, immutable",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    storage = service.storage
    if settings.storage_serve == "redirect":
        redirect = await _redirect(services.settings.storage_presign_seconds, service, key)
        if redirect is not None:
            return redirect
    wants = request.headers.get("range") if request.method == "GET" else None
    if request.method == "HEAD" or wants or etag in request.headers.get("if-none-match", ""):
        stat = await storage.stat(key)
        if stat is None:
            raise NotFound("No such image")
        headers |= _stat_headers(stat)
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(stat.size)
            return Response(status_code=200, headers=headers, media_type=media_type)
        if_range = request.headers.get("if-range")
        if wants and (not if_range or if_range in (etag, headers["Last-Modified"])):
            span = _range(wants, stat.size)
            if isinstance(span, str):  # unsatisfiable
                return Response(
                    status_code=416, headers={**headers, "Content-Range": f"bytes */{stat.size}"}
                )
            if span is not None:
                return await _send(service, key, media_type, headers, span)
    return await _send(service, key, media_type, headers, None)


async def _send(
    service: GenerationService,
    key: str,
    media_type: str,
    headers: dict[str, str],
    span: tuple[int, int] | None,
) -> Response:
    """The object (or bytes `span` of it, end excluded) streamed as it is read."""
    start, end = span if span is not None else (0, None)
    blob = await service.storage.open(key, start=start, end=end)
    if blob is None:
        raise NotFound("No such image")
    headers = headers | _stat_headers(blob.stat) | {"Content-Length": str(blob.end - blob.start)}
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {blob.start}-{blob.end - 1}/{blob.stat.size}"
    return StreamingResponse(
        blob.chunks, status_code=status, headers=headers, media_type=media_type
    )


def _stat_headers(stat: Stat) -> dict[str, str]:
    return {"Accept-Ranges": "bytes", "Last-Modified": formatdate(stat.mtime, usegmt=True)}


def _range(header: str, size: int) -> tuple[int, int] | str | None:
    """The one byte range a `Range` header asks for, as (start, end excluded);
    "unsatisfiable"; or None for a header to ignore (malformed, or several ranges:
    the whole image is sent, as RFC 9110 allows)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (first or last) or not all(_digits(p) for p in (first, last) if p):
        return None
    if not first:  # the last N bytes
        if int(last) == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - int(last)), size
    start = int(first)
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, min(int(last) + 1, size) if last else size


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


async def _redirect(seconds: int, service: GenerationService, key: str) -> Response | None:
    """307 to a presigned URL of the store (None for a local folder). The image
    is looked for first: a deleted one is our 404, not the store's."""
    if await service.storage.stat(key) is None:
        raise NotFound("No such image")
    url = await service.storage.presigned_url(key, expires_in=seconds)
    if url is None:
        return None
    # Cached no longer than the presigned URL lives (it is the same for a while).
    cache = f"private, max-age={max(0, seconds // 2)}"
    return Response(status_code=307, headers={"Location": url, "Cache-Control": cache})


# HEAD answers like GET without the body (download tools and CDNs ask first).
router.add_api_route(IMAGE_PATH, get_image, methods=["HEAD"], include_in_schema=False)
