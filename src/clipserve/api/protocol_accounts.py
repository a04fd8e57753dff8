"""Wire models of the account, usage, sign-up and admin routes. Money is exact integer micro-dollars
(`*_micros`) with a dollar figure beside it for display."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from clipserve.api.protocol import RequestModel


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# What an admin may set, on the admin routes and in `clipserve keys` alike: typo guards well inside what the
# columns hold (int64 micro-dollars, int32 per-minute limits, int64 ids). A larger grant is several grants.
MAX_CREDIT_DOLLARS = Decimal(1_000_000)
MAX_RATE_LIMIT_PER_MINUTE = 1_000_000
MAX_KEY_LIFETIME_DAYS = 36_500
MAX_RECORD_ID = 2**63 - 1

Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Dollars = Annotated[Decimal, Field(ge=0, le=MAX_CREDIT_DOLLARS)]
RecordId = Annotated[int, Field(ge=1, le=MAX_RECORD_ID)]
PerMinute = Annotated[int, Field(ge=0, le=MAX_RATE_LIMIT_PER_MINUTE)]


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


class SignupRequest(RequestModel):
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
    # a web login's console key: what its session is metered through; it has no presentable secret
    is_console: bool = False


class NewKeyResponse(BaseModel):
    """The only response that ever contains the key itself."""

    key: str
    key_info: KeyInfo
    account: AccountInfo


class CreateKeyRequest(RequestModel):
    name: Name
    account_id: RecordId | None = Field(
        default=None, description="Add the key to this account (else a new one)."
    )
    credit: Dollars = Field(default=Decimal(0), description="Dollars granted to the account.")
    admin: bool = False
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_KEY_LIFETIME_DAYS, allow_inf_nan=False)
    requests_per_minute: PerMinute | None = Field(default=None, description="0: unlimited.")
    images_per_minute: PerMinute | None = Field(default=None, description="0: unlimited.")


class CreateAccountRequest(RequestModel):
    name: Name
    credit: Dollars = Decimal(0)


class GrantRequest(RequestModel):
    credit: Decimal = Field(
        ge=-MAX_CREDIT_DOLLARS, le=MAX_CREDIT_DOLLARS, description="Dollars to add (negative: remove)."
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


# the console's account, keys and requests (issue 12: GET /v1/account, /v1/account/keys, /v1/account/requests)
class LoginInfo(BaseModel):
    email: str
    is_admin: bool


class PriceInfo(BaseModel):
    per_1k_images: float  # dollars
    per_1m_tokens: float


class AccountOverview(BaseModel):
    object: Literal["account"] = "account"
    account: AccountInfo
    login: LoginInfo | None
    rate_limit: RateLimitInfo  # the caller's effective limits (None: unlimited)
    prices: PriceInfo


class AccountKeyInfo(KeyInfo):
    rate_limit: RateLimitInfo  # effective: the key's own, else the server's default


class AccountKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AccountKeyInfo]


class CreateAccountKeyRequest(RequestModel):
    name: Name


class RequestLine(BaseModel):
    id: int
    created_at: int
    endpoint: str
    images: int
    tokens: int
    cost: float
    cost_micros: int
    request_id: str | None
    key_name: str | None


class RequestList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RequestLine]
