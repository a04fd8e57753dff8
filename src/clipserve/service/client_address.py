"""Who the client is: the connecting address, or what a configured reverse proxy says it saw.

X-Forwarded-For is only a claim. It is believed only from the proxies named in `trusted_proxies`, and then only
its right-most entry that is not itself a trusted proxy (what our proxy saw; anything left of it was written by
the client). uvicorn's ProxyHeadersMiddleware implements exactly that; the app installs it itself (create_app),
so the in-process app and `clipserve serve` derive the address the same way.
"""

from __future__ import annotations

import ipaddress


def trusted_proxy_hosts(entries: list[str]) -> list[str]:
    """`trusted_proxies` in the form uvicorn's middleware reads: an address, or a network with host bits cleared
    (it would take "10.0.0.1/8" for a literal name, never matching)."""
    hosts = []
    for entry in entries:
        network = ipaddress.ip_network(entry.strip(), strict=False)
        hosts.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    return hosts


def signup_network(host: str, *, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network a sign-up counts against: the client address cut to its prefix ("2001:db8:1:2::/64").

    One IPv6 subscriber holds a whole /64 (often a /56 or /48), so counting per address would give an attacker
    2^64 free accounts. IPv4-mapped IPv6 addresses count as the IPv4 address they are. Something that is no IP
    address (a Unix socket peer) counts as itself."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
