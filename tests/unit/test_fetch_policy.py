from __future__ import annotations

import base64

import pytest

from clipserve.errors import ImageTooLargeError, InvalidImageError
from clipserve.runtime.fetch import AddressPolicy, decode_inline_image, is_remote_source


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata (link-local)
        "100.100.100.200",  # Alibaba metadata (shared address space)
        "0.0.0.0",
        "::1",
        "fe80::1%eth0",
        "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "224.0.0.1",
        "not-an-ip",
    ],
)
def test_default_policy_blocks_non_public_addresses(address: str) -> None:
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_default_policy_allows_public_addresses(address: str) -> None:
    assert AddressPolicy().allows(address)


def test_operator_can_allow_private_or_specific_networks() -> None:
    assert AddressPolicy(allow_private=True).allows("10.0.0.5")
    policy = AddressPolicy.from_cidrs(False, ["10.0.0.0/24"])
    assert policy.allows("10.0.0.5")
    assert not policy.allows("10.0.1.5")


def test_inline_sources_decode() -> None:
    payload = b"\x89PNG fake"
    encoded = base64.b64encode(payload).decode()
    assert decode_inline_image(encoded, max_bytes=1000) == payload
    assert decode_inline_image("data:image/png;base64," + encoded, max_bytes=1000) == payload
    assert decode_inline_image(encoded.rstrip("="), max_bytes=1000) == payload  # missing padding
    wrapped = "\n".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))
    assert decode_inline_image(wrapped, max_bytes=1000) == payload


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("not base64 at all!", InvalidImageError),
        ("data:image/png,rawdata", InvalidImageError),
        ("file:///etc/passwd", InvalidImageError),
        ("ftp://example.com/a.png", InvalidImageError),
        (base64.b64encode(b"x" * 2000).decode(), ImageTooLargeError),
    ],
)
def test_bad_inline_sources_are_rejected(source: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_inline_image(source, max_bytes=1000)


def test_remote_sources_are_http_or_https() -> None:
    assert is_remote_source("https://example.com/a.png")
    assert is_remote_source("HTTP://example.com/a.png")
    assert not is_remote_source("data:image/png;base64,AAAA")
    assert not is_remote_source("aHR0cHM6Ly9leGFtcGxl")
