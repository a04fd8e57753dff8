"""Jinja2 (autoescape always on) and what every page knows: who is signed in, local mode, random weights."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from clipserve.api.dependencies import get_context
from clipserve.api.session_cookies import SESSION_COOKIE
from clipserve.web.page_headers import page_headers

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class SignedIn:
    """The signed-in person as the pages show them (from the session the cookie names)."""

    account_id: int
    email: str
    is_admin: bool
    csrf_token: str


@dataclass(frozen=True)
class PageState:
    """What the layout needs on every page."""

    user: SignedIn | None
    local_mode: bool  # auth off: the API answers without credentials, and so do the pages
    random_weights: bool
    signup_open: bool


def money(dollars: Decimal) -> str:
    """Dollars as the pages print them: at least two decimals, more only when the price has them."""
    text = format(dollars.normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@functools.cache
def environment() -> Environment:
    """Autoescape is on for every template: user strings always render as text."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


async def page_state(request: Request) -> PageState:
    """Resolve the session cookie (if any) through the web accounts service; never trust the cookie alone."""
    context = get_context(request)
    user = None
    token = request.cookies.get(SESSION_COOKIE)
    if context.web_accounts is not None and token:
        session = await context.web_accounts.resolve(token)
        if session is not None:
            user = SignedIn(session.account_id, session.email, session.is_admin, session.csrf_token)
    local = context.authenticator is not None and not await context.authenticator.auth_required()
    return PageState(
        user=user,
        local_mode=local,
        random_weights=context.runtime.weights.is_random,
        signup_open=context.settings.signup_enabled,
    )


def render(
    request: Request,
    template: str,
    state: PageState,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page with the layout's state, the security headers and any extra headers (Retry-After, ...)."""
    html = environment().get_template(template).render(request=request, state=state, **values)
    return HTMLResponse(html, status_code=status_code, headers={**page_headers(), **(headers or {})})


def forbidden(request: Request, state: PageState, message: str) -> HTMLResponse:
    """The 403 page (a signed-in person without the right, or a refused form post)."""
    return render(request, "error.html", state, status_code=403, title="Not allowed", message=message)
