"""The web session cookie, the pre-session CSRF cookie, and the same-origin rule for cookie-authenticated
requests (docs/security.md, "Web sign-in and sessions")."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Request, Response

from clipserve.config import Settings
from clipserve.service.client_address import signup_network

SESSION_COOKIE = "clipserve_session"
PRESESSION_COOKIE = "clipserve_csrf"
CSRF_HEADER = "x-csrf-token"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _secure(request: Request, settings: Settings) -> bool:
    if settings.session_cookie_secure == "auto":
        return request.url.scheme == "https"  # the proxy's scheme when a trusted proxy sent it (create_app)
    return settings.session_cookie_secure == "always"


def set_session_cookie(response: Response, token: str, request: Request, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_max_age_s),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request, settings),
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


def new_presession_token() -> str:
    return secrets.token_urlsafe(32)


def set_presession_cookie(response: Response, token: str, request: Request, settings: Settings) -> None:
    """The sign-in and sign-up forms' CSRF cookie (double submit: the form's hidden field must equal it)."""
    response.set_cookie(
        PRESESSION_COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
    )


def _origin_tuple(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def is_same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site: an `Origin` header (when present)
    that is not this server's own scheme://host[:port], or `Sec-Fetch-Site: cross-site`."""
    if request.headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        theirs = _origin_tuple(parts.scheme, parts.hostname, parts.port)
    except ValueError:
        return False
    if not parts.scheme or parts.path or parts.query or parts.username is not None:
        return False  # "null", or not an origin at all
    ours = _origin_tuple(request.url.scheme, request.url.hostname, request.url.port)
    return theirs == ours


def tokens_match(presented: str | None, expected: str | None) -> bool:
    """Constant-time equality of two tokens; an empty or missing one never matches."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def client_address(request: Request, settings: Settings) -> str:
    """The network a client's sign-ups and failed sign-ins count against (as /v1/signup counts them)."""
    return signup_network(
        request.client.host if request.client else "unknown",
        ipv4_prefix=settings.signup_ipv4_prefix,
        ipv6_prefix=settings.signup_ipv6_prefix,
    )
