"""Route dependencies for who is calling: a Bearer key, a signed-in web session (cookie + CSRF token from this
origin), or local mode; and an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from clipserve.api.dependencies import get_context
from clipserve.api.session_cookies import CSRF_HEADER, SESSION_COOKIE, is_same_origin, tokens_match
from clipserve.errors import InvalidRequestError, ServiceUnavailableError
from clipserve.service.auth import Authenticator, Caller
from clipserve.store.records import KeyRecord


def get_authenticator(request: Request) -> Authenticator:
    authenticator = get_context(request).authenticator
    if authenticator is None:
        raise ServiceUnavailableError("the service is starting up; retry shortly")
    return authenticator


async def session_console_key(request: Request) -> KeyRecord | None:
    """The console key of the request's web session, only when the request is not from another site and
    carries the session's CSRF token in X-CSRF-Token; else None (the cookie is then ignored)."""
    token = request.cookies.get(SESSION_COOKIE)
    web_accounts = get_context(request).web_accounts
    if not token or web_accounts is None or not is_same_origin(request):
        return None
    presented = request.headers.get(CSRF_HEADER)
    if not presented:
        return None
    found = await web_accounts.resolve_with_key(token)
    if found is None or not tokens_match(presented, found[0].csrf_token):
        return None
    return found[1]


async def get_caller(
    request: Request, authenticator: Annotated[Authenticator, Depends(get_authenticator)]
) -> Caller:
    authorization = request.headers.get("authorization")
    if authorization is None and SESSION_COOKIE in request.cookies:
        console_key = await session_console_key(request)
        if console_key is not None:
            return await authenticator.authenticate_session(console_key)
    return await authenticator.authenticate(authorization)


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    Authenticator.require_admin(caller)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]


def account_key(caller: Caller) -> KeyRecord:
    """The caller's key, for the routes about one's own account and keys (a 400 in local mode: there is none)."""
    if caller.key is None:
        raise InvalidRequestError(
            "authentication is off on this server (local mode): there is no key or account",
            code="auth_disabled",
        )
    return caller.key
