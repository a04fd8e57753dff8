"""The HTML form posts: sign-up, sign-in, sign-out. The only routes that set or clear the session cookie.

They work without JavaScript. Every post must come from this site (Origin / Sec-Fetch-Site) and carry the
form's CSRF token: the pre-session cookie's value for sign-up and sign-in, the session's for sign-out.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from clipserve.api.dependencies import get_context, get_web_accounts
from clipserve.api.session_cookies import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    clear_session_cookie,
    client_address,
    is_same_origin,
    new_presession_token,
    set_presession_cookie,
    set_session_cookie,
    tokens_match,
)
from clipserve.errors import ClipserveError
from clipserve.web.rendering import PageState, forbidden, money, page_state, render

router = APIRouter(include_in_schema=False)

FORM_FIELDS_MAX = 8  # the forms have at most four fields; more is not a browser filling them in
FORM_TEMPLATES = {"/signup": "signup.html", "/signin": "signin.html"}
CROSS_SITE = "This form was sent from another site, so it was refused."
STALE_FORM = "This form has expired. Reload the page and try again."


def presession_form(
    request: Request,
    state: PageState,
    template: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    email: str = "",
    name: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    """The sign-up or sign-in form with a fresh pre-session CSRF token (cookie and hidden field)."""
    token = new_presession_token()
    response = render(
        request,
        template,
        state,
        status_code=status_code,
        headers=headers,
        title="Sign up" if template == "signup.html" else "Sign in",
        csrf_token=token,
        error=error,
        email=email,
        name=name,
        signup_credit=money(get_context(request).settings.signup_credit),
    )
    set_presession_cookie(response, token, request, get_context(request).settings)
    return response


async def form_fields(request: Request) -> dict[str, str]:
    """The urlencoded body's fields (first value of each); an unparsable body gives no fields."""
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        parsed = parse_qs(body, keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX)
    except ValueError:
        return {}
    return {name: values[0] for name, values in parsed.items()}


def _presession_ok(request: Request, fields: dict[str, str]) -> bool:
    presented, expected = fields.get("csrf_token", ""), request.cookies.get(PRESESSION_COOKIE, "")
    return bool(presented) and bool(expected) and tokens_match(presented, expected)


async def _presession_post(request: Request, state: PageState) -> dict[str, str] | Response:
    """The sign-up or sign-in form's fields, or the 403 page when it came from another site or without the
    pre-session token."""
    if not is_same_origin(request):
        return forbidden(request, state, CROSS_SITE)
    fields = await form_fields(request)
    if not _presession_ok(request, fields):
        return forbidden(request, state, STALE_FORM)
    return fields


async def _signed_in(request: Request, token: str) -> Response:
    """To the console with the new session's cookie (a new id: never the one presented). Signing in (or up) on
    a browser that still holds a session ends that one: one live session per cookie."""
    presented = request.cookies.get(SESSION_COOKIE)
    if presented:
        await get_web_accounts(request).sign_out(presented)
    response = RedirectResponse("/console", status_code=303)
    set_session_cookie(response, token, request, get_context(request).settings)
    return response


@router.post("/signup")
async def sign_up(request: Request) -> Response:
    state = await page_state(request)
    fields = await _presession_post(request, state)
    if isinstance(fields, Response):
        return fields
    email, name = fields.get("email", ""), fields.get("name", "")
    if not state.signup_open:
        return forbidden(request, state, "Sign-up is closed on this server.")
    settings = get_context(request).settings
    try:
        _, token = await get_web_accounts(request).sign_up(
            email, fields.get("password", ""), name.strip() or None, client_address(request, settings)
        )
    except ClipserveError as error:
        return presession_form(
            request, state, "signup.html", status_code=error.status_code, error=error.message,
            email=email, name=name, headers=error.headers,
        )  # fmt: skip
    return await _signed_in(request, token)


@router.post("/signin")
async def sign_in(request: Request) -> Response:
    state = await page_state(request)
    fields = await _presession_post(request, state)
    if isinstance(fields, Response):
        return fields
    email = fields.get("email", "")
    settings = get_context(request).settings
    try:
        _, token = await get_web_accounts(request).sign_in(
            email, fields.get("password", ""), client_address(request, settings)
        )
    except ClipserveError as error:
        return presession_form(
            request, state, "signin.html", status_code=error.status_code, error=error.message,
            email=email, headers=error.headers,
        )  # fmt: skip
    return await _signed_in(request, token)


@router.post("/signout")
async def sign_out(request: Request) -> Response:
    state = await page_state(request)
    if not is_same_origin(request):
        return forbidden(request, state, CROSS_SITE)
    fields = await form_fields(request)
    if state.user is not None:
        if not tokens_match(fields.get("csrf_token", ""), state.user.csrf_token):
            return forbidden(request, state, STALE_FORM)
        await get_web_accounts(request).sign_out(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(response)
    return response
