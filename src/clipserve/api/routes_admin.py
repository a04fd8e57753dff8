"""Admin routes (admin keys only): accounts, keys, credit grants, usage and billing for everyone."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clipserve.api.account_views import account_info, key_info, usage_range, usage_response
from clipserve.api.auth import get_admin
from clipserve.api.bodies import JsonBody
from clipserve.api.dependencies import get_accounts, get_context, get_ledger, run_store
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_accounts import (
    MAX_RECORD_ID,
    AccountInfo,
    AccountList,
    BillingLineItem,
    BillingUsage,
    CreateAccountRequest,
    CreateKeyRequest,
    DailyCost,
    GrantRequest,
    KeyInfo,
    KeyList,
    NewKeyResponse,
    UsageResponse,
)
from clipserve.errors import InvalidRequestError
from clipserve.service.pricing import dollars_to_micros
from clipserve.store.accounts import AccountStore
from clipserve.store.ledger import LedgerStore
from clipserve.store.records import KeyOptions

router = APIRouter(
    tags=["admin"],
    dependencies=[Depends(get_admin)],
    responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404)},
)
AccountsDep = Annotated[AccountStore, Depends(get_accounts)]
# ids beyond int64 are refused here, not by the database driver (a 500)
AccountIdQuery = Annotated[int | None, Query(ge=1, le=MAX_RECORD_ID)]


def _micros(dollars: object, param: str) -> int:
    try:
        return dollars_to_micros(str(dollars))
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param=param) from exc


@router.get("/v1/admin/accounts", response_model=AccountList)
async def list_accounts(request: Request, accounts: AccountsDep) -> AccountList:
    return AccountList(data=[account_info(a) for a in await run_store(request, accounts.list_accounts)])


@router.post("/v1/admin/accounts", response_model=AccountInfo)
async def create_account(
    body: Annotated[CreateAccountRequest, Depends(JsonBody(CreateAccountRequest))],
    request: Request,
    accounts: AccountsDep,
) -> AccountInfo:
    credit = _micros(body.credit, "credit")
    return account_info(await run_store(request, lambda: accounts.create_account(body.name, credit)))


@router.post("/v1/admin/accounts/{account_id}/grants", response_model=AccountInfo)
async def grant_credit(
    account_id: Annotated[int, Path(ge=1, le=MAX_RECORD_ID)],
    body: Annotated[GrantRequest, Depends(JsonBody(GrantRequest))],
    request: Request,
    accounts: AccountsDep,
) -> AccountInfo:
    credit = _micros(body.credit, "credit")
    return account_info(await run_store(request, lambda: accounts.grant(account_id, credit, body.note)))


@router.get("/v1/admin/keys", response_model=KeyList)
async def list_keys(request: Request, accounts: AccountsDep, account_id: AccountIdQuery = None) -> KeyList:
    keys = await run_store(request, lambda: accounts.list_keys(account_id))
    now = accounts.clock()
    return KeyList(data=[key_info(key, now) for key in keys])


@router.post("/v1/admin/keys", response_model=NewKeyResponse)
async def create_key(
    body: Annotated[CreateKeyRequest, Depends(JsonBody(CreateKeyRequest))],
    request: Request,
    accounts: AccountsDep,
) -> NewKeyResponse:
    credit = _micros(body.credit, "credit")
    options = KeyOptions(
        is_admin=body.admin,
        expires_at=accounts.clock() + timedelta(days=body.expires_in_days) if body.expires_in_days else None,
        requests_per_minute=body.requests_per_minute,
        images_per_minute=body.images_per_minute,
    )
    account, key, plaintext = await run_store(
        request, lambda: accounts.issue_key(body.name, credit, options, body.account_id)
    )
    return NewKeyResponse(
        key=plaintext, key_info=key_info(key, accounts.clock()), account=account_info(account)
    )


@router.delete("/v1/admin/keys/{key_id}", response_model=KeyInfo)
async def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_RECORD_ID)], request: Request, accounts: AccountsDep
) -> KeyInfo:
    key = await run_store(request, lambda: accounts.revoke_key(key_id))
    authenticator = get_context(request).authenticator
    if authenticator is not None:
        authenticator.forget(key.prefix)
    return key_info(key, accounts.clock())


@router.get("/v1/admin/usage", response_model=UsageResponse)
async def usage_for_anyone(
    request: Request,
    ledger: Annotated[LedgerStore, Depends(get_ledger)],
    account_id: Annotated[
        int | None, Query(ge=1, le=MAX_RECORD_ID, description="One account (default: all).")
    ] = None,
    start_date: Annotated[date | None, Query()] = None,
    end_date: Annotated[date | None, Query()] = None,
) -> UsageResponse:
    start, end = usage_range(start_date, end_date)
    rows = await run_store(request, lambda: ledger.usage(account_id, start, end))
    return usage_response(account_id, start, end, rows)


@router.get("/v1/dashboard/billing/usage", response_model=BillingUsage)
async def billing_usage(
    request: Request,
    ledger: Annotated[LedgerStore, Depends(get_ledger)],
    start_date: Annotated[date | None, Query()] = None,
    end_date: Annotated[date | None, Query()] = None,
) -> BillingUsage:
    """All accounts' spend per day and endpoint, in cents, as OpenAI's former dashboard endpoint."""
    start, end = usage_range(start_date, end_date)
    rows = await run_store(request, lambda: ledger.usage(None, start, end))
    by_day: dict[date, list[BillingLineItem]] = defaultdict(list)
    for row in rows:
        by_day[row.day].append(BillingLineItem(name=row.endpoint, cost=row.cost_micros / 10_000))
    return BillingUsage(
        daily_costs=[
            DailyCost(timestamp=int(datetime.combine(day, time(), UTC).timestamp()), line_items=items)
            for day, items in sorted(by_day.items())
        ],
        total_usage=sum(row.cost_micros for row in rows) / 10_000,
    )


@router.get("/v1/admin/metrics", include_in_schema=False)
async def admin_metrics(request: Request) -> Response:
    """Prometheus metrics not fit for the public /metrics: money charged per endpoint."""
    registry = get_context(request).metrics.admin_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
