"""Store records -> wire models for the account and admin routes (no secrets ever leave through here)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from clipserve.api.protocol_accounts import AccountInfo, KeyInfo, UsageLine, UsageResponse
from clipserve.errors import InvalidRequestError
from clipserve.service.api_keys import display_prefix
from clipserve.service.pricing import micros_to_dollars
from clipserve.store.records import AccountRecord, KeyRecord, UsageRow

DEFAULT_USAGE_DAYS = 30
MAX_USAGE_DAYS = 366


def dollars(micros: int) -> float:
    return float(micros_to_dollars(micros))


def epoch(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def account_info(account: AccountRecord) -> AccountInfo:
    return AccountInfo(
        id=account.id,
        name=account.name,
        created_at=int(account.created_at.timestamp()),
        granted_micros=account.granted_micros,
        charged_micros=account.charged_micros,
        balance_micros=account.balance_micros,
        balance=dollars(account.balance_micros),
    )


def key_info(key: KeyRecord, now: datetime) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        account_id=key.account_id,
        name=key.name,
        label=display_prefix(key.prefix),
        is_admin=key.is_admin,
        status=key.status(now),
        created_at=int(key.created_at.timestamp()),
        expires_at=epoch(key.expires_at),
        revoked_at=epoch(key.revoked_at),
        requests_per_minute=key.requests_per_minute,
        images_per_minute=key.images_per_minute,
        is_console=key.is_console,
    )


def usage_range(start: date | None, end: date | None) -> tuple[date, date]:
    """The inclusive day range of a usage query: any dates from 0001-01-01 to 9999-12-31, at most
    MAX_USAGE_DAYS days; by default the DEFAULT_USAGE_DAYS days up to end_date (or today)."""
    end = end or datetime.now(UTC).date()
    if start is None:  # by ordinal: end - 29 days would overflow below 0001-01-01
        start = date.fromordinal(max(1, end.toordinal() - (DEFAULT_USAGE_DAYS - 1)))
    if start > end:
        raise InvalidRequestError(
            f"start_date {start} is after end_date {end}", param="start_date", code="invalid_date_range"
        )
    if (end - start).days >= MAX_USAGE_DAYS:
        raise InvalidRequestError(
            f"ask for at most {MAX_USAGE_DAYS} days at a time", param="start_date", code="invalid_date_range"
        )
    return start, end


def usage_response(account_id: int | None, start: date, end: date, rows: list[UsageRow]) -> UsageResponse:
    total = sum(row.cost_micros for row in rows)
    return UsageResponse(
        account_id=account_id,
        start_date=start,
        end_date=end,
        data=[
            UsageLine(
                date=row.day,
                endpoint=row.endpoint,
                requests=row.requests,
                images=row.images,
                tokens=row.tokens,
                cost_micros=row.cost_micros,
                cost=dollars(row.cost_micros),
            )
            for row in rows
        ],
        total_cost_micros=total,
        total_cost=dollars(total),
    )
