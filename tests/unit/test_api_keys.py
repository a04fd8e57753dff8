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
    import math

    assert 32 * math.log2(62) > 128


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
