"""The floor: the cheapest answer a Python ASGI stack gives, a bare Starlette GET.

Run: `uvicorn floor:app` (from this folder). Every other path in the benchmark is
measured as a share of this one's requests per second.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def credits(_request: Request) -> JSONResponse:
    return JSONResponse({"data": {"credits": 100}})


app = Starlette(routes=[Route("/", credits)])
