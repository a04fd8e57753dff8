"""Password hashing: argon2id (argon2-cffi), off the event loop, in a small bounded pool.

argon2-cffi's PasswordHasher defaults are RFC 9106's second recommended ("low-memory") profile: argon2id,
t=3 passes, 64 MiB, 4 lanes, 16-byte salt, 32-byte tag. Each hash or verify costs ~64 MiB for a fraction of a
second, so at most `concurrency` run at once, at most `queue` wait, and beyond that callers get 503.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from clipserve.errors import ServiceOverloadedError

T = TypeVar("T")
# RFC 9106 section 4, second recommended option (argon2-cffi's RFC_9106_LOW_MEMORY)
DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_KIB = 65_536
DEFAULT_PARALLELISM = 4
MAX_PASSWORD_CHARS = 256


def argon2id_hasher(
    time_cost: int = DEFAULT_TIME_COST,
    memory_kib: int = DEFAULT_MEMORY_KIB,
    parallelism: int = DEFAULT_PARALLELISM,
) -> PasswordHasher:
    """argon2id with these costs (the defaults: RFC 9106's low-memory profile)."""
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


class PasswordHashing:
    """hash / verify on `concurrency` threads with at most `queue` callers waiting (then 503)."""

    def __init__(self, hasher: PasswordHasher, concurrency: int = 2, queue: int = 64) -> None:
        self.hasher = hasher
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="clipserve-passwords")
        self._capacity = concurrency + queue
        self._in_flight = 0
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self.hasher.hash(password))

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no stored hash (unknown email) it verifies against a fixed dummy
        hash of the same parameters first, so an unknown email costs the same time, then answers False."""

        def check() -> bool:
            if stored_hash is None:
                if self._dummy_hash is None:
                    self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(32))
                _verify(self.hasher, self._dummy_hash, password)
                return False
            return _verify(self.hasher, stored_hash, password)

        return await self._run(check)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, call: Callable[[], T]) -> T:
        if self._in_flight >= self._capacity:
            raise ServiceOverloadedError(
                "too many sign-ins are being checked at once; retry in a second", retry_after_s=1
            )
        self._in_flight += 1  # one event loop: no lock needed
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self._in_flight -= 1


def _verify(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
