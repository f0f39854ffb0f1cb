"""GET /images/{expires}/{signature}/{file}: serves generated images while
their signed URL is valid (410 after, 404 for anything forged or deleted).

`?size=thumb` asks for the image's thumbnail (see `thumbnails`) under the same
signed path, so it is exactly as valid as the image: same signature, same
expiry. An image stored before thumbnails existed gets one made on the spot,
and if that fails the image itself is served: never a broken picture.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from bananastand import thumbnails
from bananastand.api import schemas
from bananastand.api.deps import ServicesDep
from bananastand.errors import NotFound
from bananastand.service import GenerationService
from bananastand.storage import image_key, thumb_key

log = logging.getLogger(__name__)

router = APIRouter(tags=["images"])

_MIME = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
THUMB = "thumb"


IMAGE_PATH = "/images/{expires}/{signature}/{filename}"


@router.get(
    IMAGE_PATH,
    summary="Download a generated image",
    response_class=FileResponse,
    responses=schemas.errors(404, 410),
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
    image_id, extension = service.signer.verify(expires, signature, filename, now=now)
    if size not in (None, THUMB):
        raise NotFound("No such image size")
    path = service.storage.path(image_key(image_id, extension)) if extension in _MIME else None
    if path is None:
        raise NotFound("No such image")
    media_type, etag = _MIME[extension], f'"{image_id}"'  # an image's bytes never change
    if size == THUMB:
        thumb = await _thumbnail(service, image_id, path)
        if thumb is not None:
            path, media_type, etag = thumb, thumbnails.MIME, f'"{image_id}.thumb"'
    max_age = max(0, int(int(expires) - now))
    headers = {
        "Cache-Control": f"public, max-age={max_age}, immutable",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


async def _thumbnail(service: GenerationService, image_id: str, image: Path) -> Path | None:
    """The thumbnail's file, made now from `image` when it has none yet (an image
    stored before thumbnails); None when it cannot be made."""
    key = thumb_key(image_id)
    found = service.storage.path(key)
    if found is not None:
        return found
    try:
        with image.open("rb") as source:
            data = await thumbnails.make_async(source)
        await service.storage.put(key, data)
    except Exception:
        log.warning("image %s: could not make its thumbnail", image_id, exc_info=True)
        return None
    return service.storage.path(key)


# HEAD answers like GET without the body (download tools and CDNs ask first).
router.add_api_route(IMAGE_PATH, get_image, methods=["HEAD"], include_in_schema=False)
