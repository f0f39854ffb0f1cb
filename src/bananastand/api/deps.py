"""Dependencies the routers share, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bananastand.accounts import Caller
from bananastand.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_caller(request: Request, services: ServicesDep) -> Caller:
    return await services.accounts.authenticate(request.headers.get("authorization"))


CurrentCaller = Annotated[Caller, Depends(current_caller)]
