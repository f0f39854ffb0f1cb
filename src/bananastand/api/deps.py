"""Dependencies the routers share, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bananastand.accounts import Caller
from bananastand.errors import Unauthorized
from bananastand.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


# Declares the bearer scheme in the OpenAPI document; the header itself is checked
# by `Accounts.authenticate` (which also refuses a request carrying two of them).
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer nb_…`")


async def current_caller(
    request: Request,
    services: ServicesDep,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Caller:
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise Unauthorized("Send exactly one Authorization header")
    return await services.accounts.authenticate(headers[0] if headers else None)


CurrentCaller = Annotated[Caller, Depends(current_caller)]
