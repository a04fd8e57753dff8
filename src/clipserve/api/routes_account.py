"""The caller's own key and usage (GET /v1/key, GET /v1/usage) and open sign-up (POST /v1/signup)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from clipserve.api.account_views import account_info, dollars, key_info, usage_range, usage_response
from clipserve.api.auth import account_key
from clipserve.api.bodies import PublicJsonBody
from clipserve.api.dependencies import AppContext, get_context, get_ledger, run_store
from clipserve.api.metering import FreeCallerDep
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_accounts import (
    MAX_RECORD_ID,
    KeyStatus,
    KeyStatusResponse,
    NewKeyResponse,
    RateLimitInfo,
    SignupRequest,
    UsageResponse,
)
from clipserve.errors import NotFoundError, PermissionDeniedError
from clipserve.service.client_address import signup_network
from clipserve.service.metering import effective_limit
from clipserve.service.pricing import dollars_to_micros
from clipserve.store.ledger import LedgerStore

router = APIRouter(tags=["account"])
_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorResponse} for code in (400, 401, 403)}


@router.get("/v1/key", response_model=KeyStatusResponse, responses=_ERRORS)
async def key_status(caller: FreeCallerDep, request: Request) -> KeyStatusResponse:
    key = account_key(caller)
    context = get_context(request)
    assert context.accounts is not None
    assert context.meter is not None
    accounts, limits = context.accounts, context.meter.limits
    account = await run_store(request, lambda: accounts.get_account(key.account_id))
    info = key_info(key, accounts.clock())
    return KeyStatusResponse(
        data=KeyStatus(
            label=info.label,
            name=key.name,
            account_id=key.account_id,
            is_admin=key.is_admin,
            limit=dollars(account.granted_micros),
            usage=dollars(account.charged_micros),
            limit_remaining=dollars(account.balance_micros),
            limit_micros=account.granted_micros,
            usage_micros=account.charged_micros,
            limit_remaining_micros=account.balance_micros,
            expires_at=info.expires_at,
            rate_limit=RateLimitInfo(
                requests_per_minute=effective_limit(key.requests_per_minute, limits.requests_per_minute),
                images_per_minute=effective_limit(key.images_per_minute, limits.images_per_minute),
            ),
        )
    )


@router.get("/v1/usage", response_model=UsageResponse, responses=_ERRORS)
async def usage(
    caller: FreeCallerDep,
    request: Request,
    ledger: Annotated[LedgerStore, Depends(get_ledger)],
    start_date: Annotated[date | None, Query()] = None,
    end_date: Annotated[date | None, Query()] = None,
    account_id: Annotated[
        int | None, Query(ge=1, le=MAX_RECORD_ID, description="Admin keys only: another account.")
    ] = None,
) -> UsageResponse:
    key = account_key(caller)
    if account_id is not None and account_id != key.account_id and not key.is_admin:
        raise PermissionDeniedError("only admin keys can read another account's usage")
    target = account_id if account_id is not None else key.account_id
    start, end = usage_range(start_date, end_date)
    rows = await run_store(request, lambda: ledger.usage(target, start, end))
    return usage_response(target, start, end, rows)


# 429: sign-ups per client address per day (signups_per_address_per_day)
@router.post(
    "/v1/signup", response_model=NewKeyResponse, responses={**_ERRORS, 429: {"model": ErrorResponse}}
)
async def sign_up(
    body: Annotated[SignupRequest, Depends(PublicJsonBody(SignupRequest))],
    request: Request,
    context: Annotated[AppContext, Depends(get_context)],
) -> NewKeyResponse:
    settings = context.settings
    if not settings.signup_enabled or context.accounts is None or context.meter is None:
        raise NotFoundError("sign-up is not enabled on this server", code="signup_disabled")
    accounts = context.accounts
    # request.client is the connecting peer, or the client a trusted proxy named (create_app)
    address = signup_network(
        request.client.host if request.client else "unknown",
        ipv4_prefix=settings.signup_ipv4_prefix,
        ipv6_prefix=settings.signup_ipv6_prefix,
    )
    credit = dollars_to_micros(settings.signup_credit)
    account, key, plaintext = await run_store(
        request, lambda: accounts.sign_up(address, body.name, credit, settings.signups_per_address_per_day)
    )
    if context.authenticator is not None:
        context.authenticator.key_created()
    return NewKeyResponse(
        key=plaintext, key_info=key_info(key, accounts.clock()), account=account_info(account)
    )
