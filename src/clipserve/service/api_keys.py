"""API key material: generate, split, hash, verify. Keys are shown once and stored only as a SHA-256.

Format: ``sk-clip-`` + 12-character prefix (not secret; finds the row) + 32-character secret (~190 bits of
base62). A fast hash is the right one here: the secret is random and long, so there is nothing to brute-force
(password hashing exists for low-entropy human secrets).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

KEY_TAG = "sk-clip-"
PREFIX_LENGTH = 12
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
_ALPHABET_SET = frozenset(_ALPHABET)
KEY_LENGTH = len(KEY_TAG) + PREFIX_LENGTH + SECRET_LENGTH
# Compared against when the prefix is unknown, so a wrong prefix and a wrong secret take the same path.
UNKNOWN_KEY_SHA256 = hashlib.sha256(b"clipserve: no key has this prefix").digest()


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    secret_sha256: bytes


def generate_key() -> NewKey:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))
    return NewKey(KEY_TAG + prefix + secret, prefix, hash_secret(secret))


def split_key(presented: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    if len(presented) != KEY_LENGTH or not presented.startswith(KEY_TAG):
        return None
    body = presented[len(KEY_TAG) :]
    if not set(body) <= _ALPHABET_SET:
        return None
    return body[:PREFIX_LENGTH], body[PREFIX_LENGTH:]


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def secret_matches(
    stored_sha256: bytes | None,
    secret: str,
    compare: Callable[[bytes, bytes], bool] = hmac.compare_digest,
) -> bool:
    """Constant-time check; with no stored hash (unknown prefix) it still hashes and compares, then fails."""
    matched = compare(stored_sha256 or UNKNOWN_KEY_SHA256, hash_secret(secret))
    return matched and stored_sha256 is not None


def display_prefix(prefix: str) -> str:
    """How a key is shown after creation: its non-secret start only."""
    return f"{KEY_TAG}{prefix}..."
