"""The console's JSON: the caller's account (GET /v1/account), its keys (list, create, revoke) and its recent
requests. Key management needs a signed-in web session or an admin key: a leaked plain key must not be able to
mint more keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from clipserve.api.account_views import account_info, dollars, key_info
from clipserve.api.auth import account_key
from clipserve.api.bodies import JsonBody
from clipserve.api.dependencies import AppContext, get_context, run_store
from clipserve.api.metering import FreeCallerDep
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_accounts import (
    MAX_RECORD_ID,
    AccountKeyInfo,
    AccountKeyList,
    AccountOverview,
    CreateAccountKeyRequest,
    KeyInfo,
    LoginInfo,
    NewKeyResponse,
    PriceInfo,
    RateLimitInfo,
    RequestLine,
    RequestList,
)
from clipserve.errors import NotFoundError, PermissionDeniedError
from clipserve.service.auth import Caller
from clipserve.service.metering import RateLimitDefaults, effective_limit
from clipserve.store.records import KeyRecord

router = APIRouter(
    tags=["account"], responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)}
)
ContextDep = Annotated[AppContext, Depends(get_context)]
MAX_REQUESTS_LISTED = 200


def _key_manager(caller: Caller) -> KeyRecord:
    key = account_key(caller)
    if not (caller.session or caller.is_admin):
        raise PermissionDeniedError(
            "API keys are managed from a signed-in console session (or with an admin key), not with a plain "
            "API key",
            code="key_management_requires_console",
        )
    return key


def _rate_limit(key: KeyRecord, defaults: RateLimitDefaults) -> RateLimitInfo:
    return RateLimitInfo(
        requests_per_minute=effective_limit(key.requests_per_minute, defaults.requests_per_minute),
        images_per_minute=effective_limit(key.images_per_minute, defaults.images_per_minute),
    )


@router.get("/v1/account", response_model=AccountOverview)
async def account_overview(caller: FreeCallerDep, request: Request, context: ContextDep) -> AccountOverview:
    key = account_key(caller)
    assert context.accounts is not None
    assert context.meter is not None
    assert context.web_accounts is not None
    accounts, logins, meter = context.accounts, context.web_accounts.logins, context.meter
    account = await run_store(request, lambda: accounts.get_account(key.account_id))
    login = await run_store(request, lambda: logins.of_account(key.account_id))
    return AccountOverview(
        account=account_info(account),
        login=LoginInfo(email=login.email, is_admin=login.is_admin) if login else None,
        rate_limit=_rate_limit(key, meter.limits),
        prices=PriceInfo(
            per_1k_images=float(meter.prices.per_1k_images), per_1m_tokens=float(meter.prices.per_1m_tokens)
        ),
    )


@router.get("/v1/account/keys", response_model=AccountKeyList)
async def list_account_keys(caller: FreeCallerDep, request: Request, context: ContextDep) -> AccountKeyList:
    key = _key_manager(caller)
    assert context.accounts is not None
    assert context.meter is not None
    accounts, defaults = context.accounts, context.meter.limits
    keys = await run_store(request, lambda: accounts.list_keys(key.account_id, console=False))
    now = accounts.clock()
    return AccountKeyList(
        data=[
            AccountKeyInfo(**key_info(k, now).model_dump(), rate_limit=_rate_limit(k, defaults))
            for k in reversed(keys)  # newest first
        ]
    )


@router.post("/v1/account/keys", response_model=NewKeyResponse)
async def create_account_key(
    body: Annotated[CreateAccountKeyRequest, Depends(JsonBody(CreateAccountKeyRequest))],
    caller: FreeCallerDep,
    request: Request,
    context: ContextDep,
) -> NewKeyResponse:
    """A new (non-admin) key on the caller's account; the response is the only place its secret appears."""
    key = _key_manager(caller)
    assert context.accounts is not None
    accounts = context.accounts
    new_key, plaintext = await run_store(request, lambda: accounts.create_key(key.account_id, body.name))
    account = await run_store(request, lambda: accounts.get_account(key.account_id))
    if context.authenticator is not None:
        context.authenticator.key_created()
    return NewKeyResponse(
        key=plaintext, key_info=key_info(new_key, accounts.clock()), account=account_info(account)
    )


@router.delete("/v1/account/keys/{key_id}", response_model=KeyInfo)
async def revoke_account_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_RECORD_ID)],
    caller: FreeCallerDep,
    request: Request,
    context: ContextDep,
) -> KeyInfo:
    """Revoke one of the caller's keys; it stops working on this process at once (other replicas: within
    their key cache's few seconds). Another account's key, or a console key, is "not found"."""
    key = _key_manager(caller)
    assert context.accounts is not None
    accounts = context.accounts

    def revoke() -> KeyRecord:
        target = accounts.find_key_by_id(key_id)
        if target is None or target.account_id != key.account_id or target.is_console:
            raise NotFoundError(f"no key with id {key_id} on this account", param="key_id")
        return accounts.revoke_key(key_id)

    revoked = await run_store(request, revoke)
    if context.authenticator is not None:
        context.authenticator.forget(revoked.prefix)
    return key_info(revoked, accounts.clock())


@router.get("/v1/account/requests", response_model=RequestList)
async def list_account_requests(
    caller: FreeCallerDep,
    request: Request,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=MAX_REQUESTS_LISTED)] = 50,
) -> RequestList:
    """The account's latest charged requests, newest first (request_id is the call's x-request-id)."""
    key = account_key(caller)
    ledger = context.ledger
    assert ledger is not None  # the caller dependency needed the accounts store
    rows = await run_store(request, lambda: ledger.recent_charges(key.account_id, limit))
    return RequestList(
        data=[
            RequestLine(
                id=row.id,
                created_at=int(row.created_at.timestamp()),
                endpoint=row.endpoint,
                images=row.images,
                tokens=row.tokens,
                cost=dollars(row.cost_micros),
                cost_micros=row.cost_micros,
                request_id=row.request_id,
                key_name=row.key_name,
            )
            for row in rows
        ]
    )
