"""Wire models of the account, usage, sign-up and admin routes. Money is exact integer micro-dollars
(`*_micros`) with a dollar figure beside it for display."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Dollars = Annotated[Decimal, Field(ge=0, le=Decimal(1_000_000_000))]


class RateLimitInfo(BaseModel):
    requests_per_minute: int | None
    images_per_minute: int | None


class KeyStatus(BaseModel):
    """GET /v1/key: modelled on OpenRouter's key endpoint; `limit` is the account's credit granted so far."""

    label: str
    name: str
    account_id: int
    is_admin: bool
    limit: float
    usage: float
    limit_remaining: float
    limit_micros: int
    usage_micros: int
    limit_remaining_micros: int
    expires_at: int | None
    rate_limit: RateLimitInfo


class KeyStatusResponse(BaseModel):
    data: KeyStatus


class UsageLine(BaseModel):
    date: date
    endpoint: str
    requests: int
    images: int
    tokens: int
    cost_micros: int
    cost: float


class UsageResponse(BaseModel):
    object: Literal["list"] = "list"
    account_id: int | None
    start_date: date
    end_date: date
    data: list[UsageLine]
    total_cost_micros: int
    total_cost: float


class SignupRequest(BaseModel):
    name: Name


class AccountInfo(BaseModel):
    id: int
    name: str
    created_at: int
    granted_micros: int
    charged_micros: int
    balance_micros: int
    balance: float


class KeyInfo(BaseModel):
    id: int
    account_id: int
    name: str
    label: str  # the key's non-secret start
    is_admin: bool
    status: Literal["active", "revoked", "expired"]
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    requests_per_minute: int | None
    images_per_minute: int | None


class NewKeyResponse(BaseModel):
    """The only response that ever contains the key itself."""

    key: str
    key_info: KeyInfo
    account: AccountInfo


class CreateKeyRequest(BaseModel):
    name: Name
    account_id: int | None = Field(default=None, description="Add the key to this account (else a new one).")
    credit: Dollars = Field(default=Decimal(0), description="Dollars granted to the account.")
    admin: bool = False
    expires_in_days: float | None = Field(default=None, gt=0, le=36_500)
    requests_per_minute: int | None = Field(default=None, ge=0, le=2**31 - 1)
    images_per_minute: int | None = Field(default=None, ge=0, le=2**31 - 1)


class CreateAccountRequest(BaseModel):
    name: Name
    credit: Dollars = Decimal(0)


class GrantRequest(BaseModel):
    credit: Decimal = Field(
        ge=-Decimal(1_000_000_000),
        le=Decimal(1_000_000_000),
        description="Dollars to add (negative: remove).",
    )
    note: Annotated[str, Field(max_length=500), AfterValidator(_no_nul)] | None = None


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AccountInfo]


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyInfo]


class BillingLineItem(BaseModel):
    name: str
    cost: float  # cents, as OpenAI's legacy dashboard endpoint reported


class DailyCost(BaseModel):
    timestamp: int
    line_items: list[BillingLineItem]


class BillingUsage(BaseModel):
    """GET /v1/dashboard/billing/usage, in the shape of OpenAI's former dashboard endpoint (cents)."""

    object: Literal["list"] = "list"
    daily_costs: list[DailyCost]
    total_usage: float
