"""Get image bytes from what a client sent: a data URI, raw base64, or an http(s) URL fetched safely.

URL safety (SSRF): only http(s); every address a host name resolves to is checked *after* DNS, inside the
connector's resolver, so the connection can only go to an address that passed; IP literals are checked
before connecting; redirects are followed by hand, each hop checked again; size, time and hop count are capped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from clipserve.errors import ImageFetchError, ImageTooLargeError, InvalidImageError
from clipserve.runtime.fair_slots import FairSlots

if TYPE_CHECKING:
    from clipserve.config import Settings

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "clipserve-image-fetcher/1.0"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_remote_source(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def decode_inline_image(source: str, *, max_bytes: int) -> bytes:
    """The bytes of a data URI or raw base64 string."""
    payload = source
    is_data_uri = source[:5].lower() == "data:"
    if is_data_uri:
        header, sep, payload = source.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise InvalidImageError("image data URI must be base64-encoded: data:image/...;base64,<data>")
    elif ":" in source[:16] and "://" in source[:16]:
        scheme = source.split(":", 1)[0]
        raise InvalidImageError(f"unsupported image URL scheme {scheme!r}: use http(s), a data URI or base64")
    payload = "".join(payload.split())  # tolerate line-wrapped base64
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageTooLargeError(f"image is over the {max_bytes}-byte limit")
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(_bad_base64(payload, is_data_uri)) from exc


def _bad_base64(payload: str, in_data_uri: bool) -> str:
    """What is wrong with a payload that is not base64: the first character that cannot be, or its padding."""
    where = "the image data URI's payload (after the comma)" if in_data_uri else "the image"
    bad = _NOT_BASE64.search(payload)
    if bad is not None:
        found = f"{bad.group()!r} at character {bad.start()}"
        reason = f"{found}, which base64 does not use (standard alphabet A-Z a-z 0-9 + /, '=' padding only at the end)"
    else:
        reason = "its '=' padding is misplaced or its length is impossible for base64"
    if in_data_uri:
        return f"{where} is not valid base64: {reason}"
    return f"{where} is not an http(s) URL or a data URI, and not valid base64: {reason}"


_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses image URLs may reach."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_cidrs(cls, allow_private: bool, cidrs: list[str]) -> AddressPolicy:
        return cls(allow_private, tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def allows(self, address: str) -> bool:
        ip = _parse_ip(address)
        if ip is None:
            return False
        if self.allow_private:
            return True
        # An IPv6 address that carries an IPv4 one is allowed when either form is in an allowed network.
        candidates = [ip] if (embedded := _embedded_ipv4(ip)) is None else [ip, embedded]
        if any(c in net for c in candidates for net in self.allowed_networks):
            return True
        return _is_public(ip)


# IPv6 ranges refused outright: deprecated or special forms whose destination is not a plain global host.
# is_global (Python 3.11) calls all of these global except Teredo.
_REFUSED_IPV6 = tuple(
    ipaddress.IPv6Network(cidr)
    for cidr in (
        "::/96",  # IPv4-compatible ::a.b.c.d (deprecated, RFC 4291); also :: and ::1
        "::ffff:0:0:0/96",  # IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 2765)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to the operator's own IPv4 space
        "2001::/32",  # Teredo tunnels (reach whatever IPv4 host the tunnel names)
        "fec0::/10",  # site-local (deprecated, RFC 3879): the internal network
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052): last 32 bits are IPv4


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a translated IPv6 address reaches: IPv4-mapped, NAT64 or 6to4."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour


def _is_public(ip: IPAddress) -> bool:
    # is_global is False for private, loopback, link-local (169.254.169.254 metadata), CGNAT
    # (100.100.100.200 metadata), unique-local (fd00:ec2::254 metadata), reserved and unspecified.
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _REFUSED_IPV6):
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _is_public(embedded)
    return ip.is_global and not ip.is_multicast


def _parse_ip(address: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None


class BlockedAddressError(OSError):
    """A host name resolved only to addresses the policy forbids."""


class _PolicyResolver(AbstractResolver):
    """Resolves with getaddrinfo, then drops every address the policy forbids."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.allows(r["host"])]
        if not allowed:
            raise BlockedAddressError(f"{host} resolves to a non-public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_s: float
    max_redirects: int
    max_connections: int = 64  # the whole server's pool
    per_account: int = 8  # one account's share of it, across all its requests


class ImageFetcher:
    """Fetches image URLs under an AddressPolicy and FetchLimits. Create and close inside the event loop.

    Connections are shared fairly through connection(account): each account may hold `per_account` of the
    `max_connections`, and when the pool is full a freed connection goes to the next waiting account in turn.
    """

    def __init__(self, policy: AddressPolicy, limits: FetchLimits) -> None:
        self._policy = policy
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self.slots = FairSlots(limits.max_connections, limits.per_account)

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageFetcher:
        """The fetcher Settings describe: the address policy and limits of the server and of embed-dataset."""
        return cls(
            AddressPolicy.from_cidrs(
                settings.image_fetch_allow_private, settings.image_fetch_allowed_networks
            ),
            FetchLimits(
                settings.max_image_bytes,
                settings.image_fetch_timeout_s,
                settings.image_fetch_max_redirects,
                max_connections=settings.image_fetch_max_connections,
                per_account=settings.image_fetch_concurrency,
            ),
        )

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=_PolicyResolver(self._policy), limit=self._limits.max_connections, ttl_dns_cache=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # a proxy from the environment would bypass the address checks
            timeout=aiohttp.ClientTimeout(total=self._limits.timeout_s),
            headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def connection(self, account: str) -> AbstractAsyncContextManager[None]:
        """Wait for one of `account`'s connection slots; fetch inside it."""
        return self.slots.slot(account)

    async def fetch(self, url: str) -> bytes:
        """The image at `url`. Call inside connection(account): the pool is shared fairly only that way."""
        try:
            async with asyncio.timeout(self._limits.timeout_s):
                return await self._follow(URL(url))
        except TimeoutError as exc:
            raise ImageFetchError(
                f"timed out after {self._limits.timeout_s:g}s fetching {_safe(url)}"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddressError):
                raise ImageFetchError(f"image URL {_safe(url)} is not allowed: {exc.os_error}") from exc
            raise ImageFetchError(f"could not connect to fetch {_safe(url)}") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise ImageFetchError(f"could not fetch {_safe(url)}: {type(exc).__name__}") from exc

    async def _follow(self, url: URL) -> bytes:
        if self._session is None:
            raise RuntimeError("ImageFetcher.start() was not called")
        for _ in range(self._limits.max_redirects + 1):
            self._check_url(url)
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageFetchError(f"redirect without Location from {_safe(str(url))}")
                    url = url.join(URL(location))
                    continue
                if response.status != 200:
                    raise ImageFetchError(f"fetching {_safe(str(url))} returned HTTP {response.status}")
                return await self._read_capped(response)
        raise ImageFetchError(f"more than {self._limits.max_redirects} redirects fetching the image")

    def _check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise ImageFetchError(f"unsupported image URL scheme {url.scheme!r}: only http and https")
        if not url.host:
            raise ImageFetchError("image URL has no host")
        if _parse_ip(url.host) is not None and not self._policy.allows(url.host):
            raise ImageFetchError(f"image URL {_safe(str(url))} is not allowed: non-public address")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self._limits.max_bytes
        if response.content_length is not None and response.content_length > cap:
            raise ImageTooLargeError(f"image is {response.content_length} bytes; the limit is {cap}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > cap:
                raise ImageTooLargeError(f"image is over the {cap}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)


def _safe(url: str, limit: int = 120) -> str:
    """A URL for messages: no query string or fragment (they may carry tokens), and not too long."""
    try:
        shown = str(URL(url).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        shown = url
    return shown if len(shown) <= limit else shown[:limit] + "..."
