"""Dependencies the routers share, as `Annotated` aliases.

Both are plain `async` functions of the request: a sync dependency would cost a
hand-off to a worker thread on every request, and sub-dependencies cost their own
resolution. The bearer scheme is declared in the OpenAPI document by `app._openapi`
for every operation that takes `CurrentCaller`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bananastand.accounts import Caller
from bananastand.container import Services
from bananastand.errors import Unauthorized


async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_caller(request: Request) -> Caller:
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise Unauthorized("Send exactly one Authorization header")
    services: Services = request.app.state.services
    return await services.accounts.authenticate(headers[0] if headers else None)


CurrentCaller = Annotated[Caller, Depends(current_caller)]
