"""Route dependencies for who is calling: any valid key (or local mode), or an admin key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from clipserve.api.dependencies import get_context
from clipserve.errors import ServiceUnavailableError
from clipserve.service.auth import Authenticator, Caller


def get_authenticator(request: Request) -> Authenticator:
    authenticator = get_context(request).authenticator
    if authenticator is None:
        raise ServiceUnavailableError("the service is starting up; retry shortly")
    return authenticator


async def get_caller(
    request: Request, authenticator: Annotated[Authenticator, Depends(get_authenticator)]
) -> Caller:
    return await authenticator.authenticate(request.headers.get("authorization"))


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    Authenticator.require_admin(caller)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
