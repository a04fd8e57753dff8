"""GET routes of the site: the model page, sign-up/sign-in forms, console, playground, admin.

Pages render only what the layout needs; everything dynamic comes from the JSON /v1 API, called by the
page's script (the API stays the one source of pricing, metering and auth).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from clipserve.api.dependencies import get_context, run_store
from clipserve.model_card import (
    ARCHITECTURE,
    HUB_ID,
    INTENDED_USE,
    MODEL_FACTS,
    RETRIEVAL_RECALL,
    RETRIEVAL_SOURCE,
    SHORT_NAME,
)
from clipserve.service.pricing import micros_to_dollars
from clipserve.web.rendering import forbidden, money, page_state, render
from clipserve.web.routes_forms import presession_form
from clipserve.web.snippets import snippets

router = APIRouter(include_in_schema=False)


def to_signin() -> Response:
    return RedirectResponse("/signin", status_code=303)


@router.get("/")
async def model_page(request: Request) -> Response:
    state = await page_state(request)
    context = get_context(request)
    settings = context.settings
    prices = context.meter.prices if context.meter is not None else None
    per_1k_images = prices.per_1k_images if prices else settings.price_per_1k_images
    per_1m_tokens = prices.per_1m_tokens if prices else settings.price_per_1m_tokens
    base_url = str(request.base_url).rstrip("/")
    return render(
        request,
        "model.html",
        state,
        title=SHORT_NAME,
        hub_id=HUB_ID,
        architecture=ARCHITECTURE,
        facts=MODEL_FACTS,
        recall=RETRIEVAL_RECALL,
        recall_source=RETRIEVAL_SOURCE,
        intended_use=INTENDED_USE,
        price_images=money(per_1k_images),
        price_tokens=money(per_1m_tokens),
        status="ready" if context.ready else "starting",
        snippets=snippets(base_url),
        signup_credit=money(settings.signup_credit),
    )


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    state = await page_state(request)
    if state.user is not None:
        return RedirectResponse("/console", status_code=303)
    return presession_form(request, state, "signup.html")


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    state = await page_state(request)
    if state.user is not None:
        return RedirectResponse("/console", status_code=303)
    return presession_form(request, state, "signin.html")


@router.get("/console")
async def console_page(request: Request) -> Response:
    state = await page_state(request)
    if state.user is None:
        return to_signin()
    context = get_context(request)
    accounts = context.accounts
    account = None
    if accounts is not None:
        account_id = state.user.account_id
        account = await run_store(request, lambda: accounts.get_account(account_id))
    limits = context.meter.limits if context.meter is not None else None
    return render(
        request,
        "console.html",
        state,
        title="Console",
        account_name=account.name if account else "",
        balance=f"${micros_to_dollars(account.balance_micros):.6f}" if account else "",
        requests_per_minute=limits.requests_per_minute if limits else None,
        images_per_minute=limits.images_per_minute if limits else None,
    )


@router.get("/playground")
async def playground_page(request: Request) -> Response:
    state = await page_state(request)
    if state.user is None and not state.local_mode:
        return to_signin()
    return render(request, "playground.html", state, title="Playground")


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    state = await page_state(request)
    if state.user is None:
        return to_signin()
    if not state.user.is_admin:
        return forbidden(request, state, "The admin page is for admin accounts.")
    return render(request, "admin.html", state, title="Admin")
