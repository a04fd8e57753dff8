"""Who is calling: a Bearer key checked against the store, or nobody when auth is off (local mode)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, TypeVar

from clipserve.errors import AuthenticationError, PermissionDeniedError
from clipserve.service.api_keys import secret_matches, split_key
from clipserve.store.accounts import AccountStore
from clipserve.store.records import KeyRecord

logger = logging.getLogger(__name__)

AuthMode = Literal["auto", "on", "off"]
T = TypeVar("T")
# While auth is off in auto mode, how often to look whether a first key has been created.
_KEY_CHECK_INTERVAL_S = 2.0
_KEY_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class Caller:
    """An authenticated key (and its account), or the anonymous local caller when auth is off. A web session
    caller (`session=True`) carries its account's console key, so metering and limits work unchanged."""

    key: KeyRecord | None
    session: bool = False

    @property
    def is_local(self) -> bool:
        return self.key is None

    @property
    def is_admin(self) -> bool:
        return self.key is not None and self.key.is_admin

    @property
    def account(self) -> str:
        """The caller's account as per-account state knows it ("account:N", or "local"): whose fair share of
        fetches, decoding and queues a request uses, and who owns a collection."""
        return "local" if self.key is None else f"account:{self.key.account_id}"


LOCAL_CALLER = Caller(key=None)


class Authenticator:
    def __init__(
        self,
        accounts: AccountStore,
        executor: Executor,
        mode: AuthMode,
        compare: Callable[[bytes, bytes], bool] | None = None,
        cache_s: float = 5.0,
    ) -> None:
        self._accounts = accounts
        # Key records (never secrets: the stored hash only), so most requests skip a database read. A key
        # revoked elsewhere (the CLI, another replica) stops working within cache_s; here, at once.
        self._cache: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()
        self._cache_s = cache_s
        self._executor = executor
        self._mode = mode
        self._compare = compare
        self._keys_exist = False
        self._checked_at = float("-inf")

    async def auth_required(self) -> bool:
        """on: always; off: never; auto: once any usable key exists (and from then on, without re-checking)."""
        if self._mode != "auto":
            return self._mode == "on"
        if not self._keys_exist and time.monotonic() - self._checked_at >= _KEY_CHECK_INTERVAL_S:
            self._checked_at = time.monotonic()
            found = await self._run(self._accounts.has_usable_keys)
            if found:
                logger.info("an API key exists: authentication is now required")
            self._keys_exist = found
        return self._keys_exist

    def key_created(self) -> None:
        """A key was just issued through this server: in auto mode, authentication is on from now."""
        self._keys_exist = True

    async def authenticate(self, authorization: str | None) -> Caller:
        if not await self.auth_required():
            return LOCAL_CALLER
        if not authorization:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer sk-clip-...'.",
                code="missing_api_key",
            )
        scheme, _, presented = authorization.partition(" ")
        parts = split_key(presented.strip()) if scheme.lower() == "bearer" else None
        if parts is None:
            raise AuthenticationError(
                "Malformed API key. Send 'Authorization: Bearer sk-clip-...' with the key you were given."
            )
        prefix, secret = parts
        record = await self._find_key(prefix)
        # The same steps whether or not the prefix exists: hash, then a constant-time compare.
        matched = secret_matches(record.secret_sha256 if record else None, secret, *self._compare_arg())
        if record is None or not matched:
            raise AuthenticationError("Incorrect API key provided.")
        now = self._accounts.clock()
        if record.revoked_at is not None:
            raise AuthenticationError("This API key has been revoked.", code="api_key_revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthenticationError("This API key has expired.", code="api_key_expired")
        return Caller(key=record)

    async def authenticate_session(self, console_key: KeyRecord) -> Caller:
        """A signed-in web session (its cookie, CSRF token and origin already checked): the caller is its
        account's console key. Local mode stays local."""
        if not await self.auth_required():
            return LOCAL_CALLER
        now = self._accounts.clock()
        if console_key.revoked_at is not None or (
            console_key.expires_at is not None and console_key.expires_at <= now
        ):
            raise AuthenticationError(
                "this account's web access has been revoked; ask an administrator",
                code="console_key_revoked",
            )
        return Caller(key=console_key, session=True)

    def forget(self, prefix: str) -> None:
        """Drop a cached key (after it was revoked through this process)."""
        self._cache.pop(prefix, None)

    async def _find_key(self, prefix: str) -> KeyRecord | None:
        cached = self._cache.get(prefix)
        if cached is not None and time.monotonic() - cached[0] < self._cache_s:
            self._cache.move_to_end(prefix)
            return cached[1]
        record = await self._run(lambda: self._accounts.find_key(prefix))
        if record is not None:  # unknown prefixes are not cached: guessing must not fill the cache
            self._cache[prefix] = (time.monotonic(), record)
            self._cache.move_to_end(prefix)
            while len(self._cache) > _KEY_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return record

    @staticmethod
    def require_admin(caller: Caller) -> None:
        if not caller.is_admin:
            raise PermissionDeniedError(
                "this route needs an admin key (create one with `clipserve keys create --admin`)"
            )

    def _compare_arg(self) -> tuple[Callable[[bytes, bytes], bool], ...]:
        return (self._compare,) if self._compare is not None else ()

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(mode: AuthMode, keys_exist: bool, host: str, allow_unauthenticated: bool) -> str | None:
    """Why serving with these settings would be unsafe, or None. Auth off is fine on loopback only."""
    auth_on = mode == "on" or (mode == "auto" and keys_exist)
    if auth_on or is_loopback(host) or allow_unauthenticated:
        return None
    why = "--auth off" if mode == "off" else "no API key exists yet (--auth auto)"
    return (
        f"refusing to serve on {host} without authentication: {why}. Create a key with "
        "`clipserve keys create --name NAME --credit DOLLARS` (or --auth on), bind to 127.0.0.1, or pass "
        "--allow-unauthenticated if this network is trusted."
    )
