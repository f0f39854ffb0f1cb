"""A fake OpenAI Images upstream for the benchmark: answers
`POST /v1/images/generations` the way api.openai.com does (`created`, `data[].b64_json`,
`usage`), at once, with a real 1024x1024 PNG made once at start.

It is deliberately cheap, so what the benchmark measures is the gateway in front
of it. Run: `uvicorn upstream:app` (from this folder); any bearer token is accepted.
"""

import base64
import io
import json
import time

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _png() -> str:
    image = Image.new("RGB", (1024, 1024), (250, 204, 21))
    ImageDraw.Draw(image).ellipse((256, 256, 768, 768), fill=(40, 80, 220))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG_B64 = _png()


async def generations(request: Request) -> Response:
    body = json.loads(await request.body())
    n = int(body.get("n") or 1)
    answer = {
        "created": int(time.time()),
        "data": [{"b64_json": PNG_B64} for _ in range(n)],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4160 * n,
            "total_tokens": 10 + 4160 * n,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
        },
    }
    return Response(json.dumps(answer), media_type="application/json")


app = Starlette(routes=[Route("/v1/images/generations", generations, methods=["POST"])])
