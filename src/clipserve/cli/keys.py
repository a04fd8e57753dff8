"""`clipserve keys ...`: accounts, keys and credit from the command line, on the server's own database
(safe while the server runs: SQLite in WAL mode, or the shared Postgres)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from clipserve.api.protocol_accounts import (
    MAX_CREDIT_DOLLARS,
    MAX_KEY_LIFETIME_DAYS,
    MAX_RATE_LIMIT_PER_MINUTE,
    MAX_RECORD_ID,
)
from clipserve.cli.settings_args import add_settings_arguments
from clipserve.config import Settings
from clipserve.errors import ClipserveError, InvalidRequestError
from clipserve.service.api_keys import display_prefix
from clipserve.service.passwords import argon2id_hasher
from clipserve.service.pricing import MICROS_PER_DOLLAR, dollars_to_micros, micros_to_dollars
from clipserve.service.text_checks import has_lone_surrogate
from clipserve.service.web_accounts import check_password_length as _check_password
from clipserve.service.web_accounts import normalize_email
from clipserve.store.accounts import AccountStore
from clipserve.store.database import Database
from clipserve.store.ledger import LedgerStore
from clipserve.store.logins import LoginStore
from clipserve.store.records import KeyOptions

STORE_SETTINGS = ("data_dir", "database_url", "log_level")
LOGIN_SETTINGS = (
    *STORE_SETTINGS,
    "password_min_length",
    "password_hash_time_cost",
    "password_hash_memory_kib",
)
MAX_USAGE_DAYS = 3660  # `keys usage --days`: ten years of daily rows is still a short report
Handler = Callable[[AccountStore, LedgerStore, argparse.Namespace], int]


def add_keys_commands(commands: Any) -> None:
    keys = commands.add_parser(
        "keys", help="create, list, revoke API keys; grant credit; usage and ledger audit",
        description=__doc__,
    )  # fmt: skip
    actions = keys.add_subparsers(dest="keys_command", required=True)

    create = actions.add_parser("create", help="create a key (and its account); prints the key once")
    create.add_argument("--name", required=True, type=_name, help="name of the key (and of the new account)")
    create.add_argument("--credit", type=_credit, default=Decimal(0), help="dollars of credit to grant")
    create.add_argument("--account", type=_record_id, help="add the key to this existing account id")
    create.add_argument("--admin", action="store_true", help="the key may use the admin routes")
    create.add_argument(
        "--expires-in-days", type=_lifetime_days, help="the key stops working after this many days"
    )
    create.add_argument("--requests-per-minute", type=_per_minute, help="this key's limit (0: unlimited)")
    create.add_argument("--images-per-minute", type=_per_minute, help="this key's limit (0: unlimited)")
    create.set_defaults(keys_handler=_create)

    listing = actions.add_parser("list", help="list keys (never the secrets) with their accounts' balances")
    listing.add_argument("--account", type=_record_id, help="only this account's keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(keys_handler=_list)

    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument(
        "key", type=_key_reference, help="key id (from `keys list`) or its label sk-clip-XXXXXXXXXXXX..."
    )
    revoke.set_defaults(keys_handler=_revoke)

    grant = actions.add_parser("grant", help="add credit to an account (negative to remove)")
    grant.add_argument("--account", type=_record_id, required=True, help="account id")
    grant.add_argument("--credit", type=_signed_credit, required=True, help="dollars (negative: remove)")
    grant.add_argument("--note", type=_note, help="why (kept in the ledger)")
    grant.set_defaults(keys_handler=_grant)

    usage = actions.add_parser("usage", help="spend per day and endpoint")
    usage.add_argument("--account", type=_record_id, help="one account (default: all)")
    usage.add_argument(
        "--days", type=_usage_days, default=30, help=f"how many days back, 1 to {MAX_USAGE_DAYS} (default 30)"
    )
    usage.set_defaults(keys_handler=_usage)

    audit = actions.add_parser("audit", help="check balance == grants - charges for every account")
    audit.set_defaults(keys_handler=_audit)

    for parser in (create, listing, revoke, grant, usage, audit):
        add_settings_arguments(parser, STORE_SETTINGS)
        parser.set_defaults(handler=run_keys)

    login = actions.add_parser(
        "login",
        help="give an existing account a web login (email + password); the password is read from stdin when "
        "it is not a terminal, else asked twice",
    )
    login.add_argument("--account", type=_record_id, required=True, help="account id")
    login.add_argument("--email", type=_email, required=True, help="the email to sign in with")
    login.add_argument("--admin", action="store_true", help="the login may use the admin page and routes")
    add_settings_arguments(login, LOGIN_SETTINGS)
    login.set_defaults(handler=run_login)


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    database = Database(settings.resolved_database_url)
    try:
        database.migrate()
        handler: Handler = args.keys_handler
        return handler(AccountStore(database), LedgerStore(database), args)
    except ClipserveError as exc:
        print(f"clipserve: error: {exc.message}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"clipserve: error: accounts database {database.display_url}: {exc}", file=sys.stderr)
        return 1
    finally:
        database.close()


def run_login(settings: Settings, args: argparse.Namespace) -> int:
    """`keys login`: the password never appears in argv (read from stdin, or asked on the terminal)."""
    try:
        password = _read_password()
        _check_password(password, settings.password_min_length)
    except ClipserveError as exc:
        print(f"clipserve: error: {exc.message}", file=sys.stderr)
        return 1
    hasher = argon2id_hasher(settings.password_hash_time_cost, settings.password_hash_memory_kib)
    password_hash = hasher.hash(password)

    def add(accounts: AccountStore, _ledger: LedgerStore, _args: argparse.Namespace) -> int:
        login = LoginStore(accounts).add_login(args.account, args.email, password_hash, args.admin)
        print(
            f"account {login.account_id} can now sign in as {login.email}{' (admin)' if login.is_admin else ''}",
            file=sys.stderr,
        )
        return 0

    args.keys_handler = add
    return run_keys(settings, args)


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise InvalidRequestError("the two passwords differ")
    return first


# argparse value types: a bad value is one line on stderr and exit code 2 (cli.OneLineArgumentParser), and
# each range is the one the admin HTTP routes enforce (api/protocol_accounts.py).


def _dollars(value: str, low: Decimal) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not an amount of dollars: {value!r}") from exc
    if not amount.is_finite() or not low <= amount <= MAX_CREDIT_DOLLARS:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give {low} to {MAX_CREDIT_DOLLARS} dollars (a larger grant is several grants)"
        )
    if amount * MICROS_PER_DOLLAR != (amount * MICROS_PER_DOLLAR).to_integral_value():
        raise argparse.ArgumentTypeError(f"{value!r}: amounts are whole micro-dollars (0.000001)")
    return amount


def _credit(value: str) -> Decimal:
    return _dollars(value, Decimal(0))


def _signed_credit(value: str) -> Decimal:
    return _dollars(value, -MAX_CREDIT_DOLLARS)


def _integer(value: str, low: int, high: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if not low <= number <= high:
        raise argparse.ArgumentTypeError(f"{value!r}: {what} is {low} to {high}")
    return number


def _record_id(value: str) -> int:
    return _integer(value, 1, MAX_RECORD_ID, "an id")


def _per_minute(value: str) -> int:
    return _integer(value, 0, MAX_RATE_LIMIT_PER_MINUTE, "a per-minute limit")


def _usage_days(value: str) -> int:
    return _integer(value, 1, MAX_USAGE_DAYS, "the number of days")


def _lifetime_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days") from exc
    if not 0 < days <= MAX_KEY_LIFETIME_DAYS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"{value!r}: a key lives more than 0 and at most {MAX_KEY_LIFETIME_DAYS} days"
        )
    return days


def _text(value: str, longest: int, what: str) -> str:
    # argv holds lone surrogates for bytes that are not UTF-8 (Python's surrogateescape): no database takes them
    if not 1 <= len(value) <= longest or "\x00" in value or has_lone_surrogate(value):
        raise argparse.ArgumentTypeError(f"{what} is 1 to {longest} characters of valid text (no NUL)")
    return value


def _key_reference(value: str) -> str:
    if value.isdigit():
        _record_id(value)
    return _text(value, 200, "a key id or label")


def _email(value: str) -> str:
    try:
        return normalize_email(value)
    except ClipserveError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc.message}") from exc


def _name(value: str) -> str:
    return _text(value, 200, "a name")


def _note(value: str) -> str:
    return _text(value, 500, "a note")


def _create(accounts: AccountStore, _ledger: LedgerStore, args: argparse.Namespace) -> int:
    options = KeyOptions(
        is_admin=args.admin,
        expires_at=accounts.clock() + timedelta(days=args.expires_in_days) if args.expires_in_days else None,
        requests_per_minute=args.requests_per_minute,
        images_per_minute=args.images_per_minute,
    )
    account, key, plaintext = accounts.issue_key(
        args.name, dollars_to_micros(args.credit), options, args.account
    )
    print(plaintext)  # the only time the key is ever shown
    print(
        f"key {key.id} ({display_prefix(key.prefix)}{', admin' if key.is_admin else ''}) for account "
        f"{account.id} '{account.name}', balance ${micros_to_dollars(account.balance_micros)}. "
        "Store the key now: it cannot be shown again.",
        file=sys.stderr,
    )
    return 0


def _list(accounts: AccountStore, _ledger: LedgerStore, args: argparse.Namespace) -> int:
    now = accounts.clock()
    balances = {a.id: a for a in accounts.list_accounts()}
    rows = [
        {
            "key_id": key.id,
            "label": display_prefix(key.prefix),
            "name": key.name,
            "account_id": key.account_id,
            "account": balances[key.account_id].name,
            "balance": str(micros_to_dollars(balances[key.account_id].balance_micros)),
            "admin": key.is_admin,
            "status": key.status(now),
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        }
        for key in accounts.list_keys(args.account)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':>4}  {'label':<25} {'status':<8} {'admin':<5} {'account':>7}  {'balance $':>12}  name")
    for row in rows:
        print(
            f"{row['key_id']:>4}  {row['label']:<25} {row['status']:<8} {'yes' if row['admin'] else '':<5} "
            f"{row['account_id']:>7}  {row['balance']:>12}  {row['name']}"
        )
    return 0


def _revoke(accounts: AccountStore, _ledger: LedgerStore, args: argparse.Namespace) -> int:
    target: str = args.key
    if target.isdigit():
        key_id = int(target)
    else:
        prefix = target.removeprefix("sk-clip-").rstrip(".")[:12]
        found = accounts.find_key(prefix)
        if found is None:
            print(f"clipserve: error: no key labelled {target}", file=sys.stderr)
            return 1
        key_id = found.id
    key = accounts.revoke_key(key_id)
    print(f"revoked key {key.id} ({display_prefix(key.prefix)})", file=sys.stderr)
    return 0


def _grant(accounts: AccountStore, _ledger: LedgerStore, args: argparse.Namespace) -> int:
    account = accounts.grant(args.account, dollars_to_micros(args.credit), args.note)
    print(f"account {account.id} '{account.name}': balance ${micros_to_dollars(account.balance_micros)}")
    return 0


def _usage(_accounts: AccountStore, ledger: LedgerStore, args: argparse.Namespace) -> int:
    end = datetime.now(UTC).date()
    start: date = end - timedelta(days=args.days - 1)
    rows = ledger.usage(args.account, start, end)
    print(f"{'date':<10}  {'endpoint':<22} {'requests':>9} {'images':>9} {'tokens':>10} {'cost $':>12}")
    for row in rows:
        print(
            f"{row.day.isoformat():<10}  {row.endpoint:<22} {row.requests:>9} {row.images:>9} {row.tokens:>10} "
            f"{micros_to_dollars(row.cost_micros):>12}"
        )
    total = sum(row.cost_micros for row in rows)
    print(f"total ${micros_to_dollars(total)} from {start} to {end}")
    return 0


def _audit(accounts: AccountStore, ledger: LedgerStore, _args: argparse.Namespace) -> int:
    bad = 0
    for account in accounts.list_accounts():
        audit = ledger.audit(account.id)
        if not audit.consistent:
            bad += 1
            print(f"account {account.id}: INCONSISTENT {audit}")
    print(f"{len(accounts.list_accounts())} accounts checked, {bad} inconsistent")
    return 1 if bad else 0
