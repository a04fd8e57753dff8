"""Password hashing: argon2id with RFC 9106's low-memory profile by default, verify, rehash, and the bounded
pool (503 beyond its queue)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from argon2 import PasswordHasher

from clipserve.config import Settings
from clipserve.errors import ServiceOverloadedError
from clipserve.service.passwords import PasswordHashing, argon2id_hasher

pytestmark = pytest.mark.anyio


def test_the_default_hasher_is_rfc_9106_low_memory_argon2id() -> None:
    settings = Settings()
    hasher = argon2id_hasher(settings.password_hash_time_cost, settings.password_hash_memory_kib)
    # RFC 9106 section 4, second recommended option: argon2id, t=3, m=2^16 KiB, p=4, 128-bit salt, 256-bit tag
    encoded = hasher.hash("correct horse battery")
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    salt, tag = encoded.split("$")[-2:]
    assert (len(salt), len(tag)) == (22, 43)  # unpadded base64 of 16 and 32 bytes


async def test_hash_then_verify_and_a_wrong_password_fails() -> None:
    passwords = PasswordHashing(argon2id_hasher(1, 8192, 1))
    try:
        stored = await passwords.hash("correct horse battery")
        assert stored.startswith("$argon2id$")
        assert await passwords.verify(stored, "correct horse battery") is True
        assert await passwords.verify(stored, "correct horse batterY") is False
        assert await passwords.verify("not a hash", "correct horse battery") is False
        assert await passwords.verify(None, "correct horse battery") is False  # unknown email
        assert stored != await passwords.hash("correct horse battery")  # salted
    finally:
        passwords.close()


def test_a_hash_made_with_lower_costs_needs_a_rehash() -> None:
    old = argon2id_hasher(1, 8192, 1).hash("pw")
    assert PasswordHashing(argon2id_hasher(2, 8192, 1)).needs_rehash(old) is True
    assert PasswordHashing(argon2id_hasher(1, 8192, 1)).needs_rehash(old) is False


class BlockingHasher(PasswordHasher):
    """Real argon2id that waits for `release` before each hash (to fill the pool deterministically)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8192, parallelism=1)
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.started.release()
        self.release.wait()
        return super().hash(password, salt=salt)


async def test_beyond_the_pool_and_its_queue_callers_get_503() -> None:
    hasher = BlockingHasher()
    passwords = PasswordHashing(hasher, concurrency=1, queue=1)
    try:
        running = asyncio.create_task(passwords.hash("one"))
        waiting = asyncio.create_task(passwords.hash("two"))
        await asyncio.to_thread(hasher.started.acquire)  # the first is inside argon2, the second queued
        with pytest.raises(ServiceOverloadedError) as caught:  # refused at once; a queued one would hang
            await asyncio.wait_for(passwords.hash("three"), timeout=30)
        assert caught.value.status_code == 503
        assert caught.value.headers == {"Retry-After": "1"}
        hasher.release.set()
        assert all(h.startswith("$argon2id$") for h in await asyncio.gather(running, waiting))
        assert (await passwords.hash("four")).startswith("$argon2id$")  # slots are given back
    finally:
        hasher.release.set()
        passwords.close()
