"""GET /images/{expires}/{signature}/{file}: serves generated images while
their signed URL is valid (410 after, 404 for anything forged or deleted)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from bananastand.api import schemas
from bananastand.api.deps import ServicesDep
from bananastand.errors import NotFound
from bananastand.storage import image_key

router = APIRouter(tags=["images"])

_MIME = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


IMAGE_PATH = "/images/{expires}/{signature}/{filename}"


@router.get(
    IMAGE_PATH,
    summary="Download a generated image",
    response_class=FileResponse,
    responses=schemas.errors(404, 410),
)
async def get_image(
    expires: str, signature: str, filename: str, request: Request, services: ServicesDep
) -> Response:
    now = time.time()
    service = services.generation
    image_id, extension = service.signer.verify(expires, signature, filename, now=now)
    path = service.storage.path(image_key(image_id, extension)) if extension in _MIME else None
    if path is None:
        raise NotFound("No such image")
    max_age = max(0, int(int(expires) - now))
    headers = {
        "Cache-Control": f"public, max-age={max_age}, immutable",
        "ETag": f'"{image_id}"',  # an image's bytes never change
        "X-Content-Type-Options": "nosniff",
    }
    if headers["ETag"] in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=_MIME[extension], headers=headers)


# HEAD answers like GET without the body (download tools and CDNs ask first).
router.add_api_route(IMAGE_PATH, get_image, methods=["HEAD"], include_in_schema=False)
