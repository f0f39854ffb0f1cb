"""GET /images/{expires}/{signature}/{file}: serves generated images while
their signed URL is valid (410 after, 404 for anything forged or deleted)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import FileResponse

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
    responses={404: {"description": "Unknown or deleted"}, 410: {"description": "Expired"}},
)
async def get_image(
    expires: str, signature: str, filename: str, services: ServicesDep
) -> FileResponse:
    now = time.time()
    service = services.generation
    image_id, extension = service.signer.verify(expires, signature, filename, now=now)
    path = service.storage.path(image_key(image_id, extension)) if extension in _MIME else None
    if path is None:
        raise NotFound("No such image")
    max_age = max(0, int(int(expires) - now))
    return FileResponse(
        path,
        media_type=_MIME[extension],
        headers={
            "Cache-Control": f"public, max-age={max_age}, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


# HEAD answers like GET without the body (download tools and CDNs ask first).
router.add_api_route(IMAGE_PATH, get_image, methods=["HEAD"], include_in_schema=False)
