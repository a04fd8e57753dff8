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


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254
        "[64:ff9b::a9fe:a9fe]",  # as a URL host
        "64:ff9b::169.254.169.254",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::808:808",  # local-use NAT64 (RFC 8215), even of a public address
        "::a9fe:a9fe",  # IPv4-compatible (deprecated)
        "::8.8.8.8",  # IPv4-compatible is refused even for a public address
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
        "::ffff:0:8.8.8.8",
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001::1",
        "fec0::1",  # site-local (deprecated)
        "fefe::1",
    ],
)
def test_ipv6_forms_that_reach_non_public_or_special_destinations_are_refused(address: str) -> None:
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1"])
def test_ipv6_forms_of_public_ipv4_addresses_are_checked_as_that_address(address: str) -> None:
    assert AddressPolicy().allows(address)


def test_allowed_ipv4_networks_cover_their_ipv6_forms() -> None:
    policy = AddressPolicy.from_cidrs(False, ["10.0.0.0/24"])
    assert policy.allows("::ffff:10.0.0.5")
    assert policy.allows("64:ff9b::a00:5")
    assert not policy.allows("64:ff9b::a00:105")


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
