"""Key material: format, entropy, hashing, and the same verification path for every wrong key."""

from __future__ import annotations

import hashlib

import pytest

from clipserve.service.api_keys import (
    KEY_LENGTH,
    PREFIX_LENGTH,
    UNKNOWN_KEY_SHA256,
    display_prefix,
    generate_key,
    secret_matches,
    split_key,
)


def test_generated_keys_are_unique_well_formed_and_stored_only_as_a_hash() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k.plaintext for k in keys}) == 200
    for key in keys:
        assert key.plaintext.startswith("sk-clip-")
        assert len(key.plaintext) == KEY_LENGTH
        prefix, secret = split_key(key.plaintext)  # type: ignore[misc]
        assert prefix == key.prefix
        assert key.secret_sha256 == hashlib.sha256(secret.encode()).digest()
        assert secret not in display_prefix(prefix)


def test_secrets_carry_more_than_128_bits() -> None:
    """Measured on generated keys: 32 secret characters, each drawn from all 62 of [A-Za-z0-9] (190 bits)."""
    import math
    import string

    secrets_drawn = [split_key(generate_key().plaintext)[1] for _ in range(2000)]  # type: ignore[index]
    assert {len(s) for s in secrets_drawn} == {32}
    base62 = set(string.ascii_letters + string.digits)
    assert set("".join(secrets_drawn)) == base62  # 64,000 draws: a missing symbol has odds ~e^-1000
    for position in range(32):  # no position is fixed or drawn from a narrow subset
        column = [s[position] for s in secrets_drawn]
        assert len(set(column)) == 62, position
        # a uniform draw puts ~32 of 2000 on each symbol; more than 80 on one would be a >8 sigma skew
        assert max(column.count(c) for c in base62) < 80, position
    bits = 32 * math.log2(len(base62))
    assert bits > 128
    assert round(bits) == 191  # docs/accounts.md: "about 190 random bits"


@pytest.mark.parametrize(
    "presented",
    ["", "sk-clip-", "sk-proj-" + "a" * 44, "sk-clip-" + "a" * 43, "sk-clip-" + "a" * 45,
     "sk-clip-" + "a" * 43 + "!", "Bearer sk-clip-" + "a" * 44],
)  # fmt: skip
def test_malformed_keys_do_not_split(presented: str) -> None:
    assert split_key(presented) is None


def test_wrong_prefix_and_wrong_secret_take_the_same_path() -> None:
    """One hash and one constant-time compare either way: nothing to time."""
    key = generate_key()
    _, secret = split_key(key.plaintext)  # type: ignore[misc]
    calls: list[tuple[bytes, bytes]] = []

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    assert secret_matches(key.secret_sha256, secret, compare)
    assert not secret_matches(key.secret_sha256, "x" * 32, compare)  # known prefix, wrong secret
    assert not secret_matches(None, secret, compare)  # unknown prefix
    assert len(calls) == 3
    assert calls[2][0] == UNKNOWN_KEY_SHA256
    assert all(len(a) == len(b) == 32 for a, b in calls)
    assert len(display_prefix(key.prefix)) == len("sk-clip-") + PREFIX_LENGTH + 3
