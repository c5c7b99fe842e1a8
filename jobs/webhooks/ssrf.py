"""The SSRF guard for customer webhook URLs.

A URL is checked at registration and again at every delivery: its host is
resolved, and unless `WEBHOOK_ALLOW_PRIVATE_NETWORKS` is true every address
must be public (not loopback, private, link-local, site-local, CGNAT, multicast,
unspecified, reserved, documentation or a cloud-metadata address, IPv4 or IPv6,
including IPv4-mapped, IPv4-compatible, 6to4, Teredo and NAT64 forms). The
ranges are listed here as well as taken from `ipaddress`, whose tables change
between Python releases. The delivery then connects to the address that was
checked (`jobs/webhooks/transport.py`), with the URL's host kept for the Host
header and TLS (SNI and certificate check), so a DNS answer that changes in
between (rebinding) cannot redirect it.

Names are resolved in threads of this module's own (`RESOLVER_THREADS`), under a
deadline: a name whose DNS server never answers holds its thread until the system
resolver gives up, and the event loop's default executor, a handful of threads,
also resolves the names of Redis and S3.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jobs.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXTRA_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT (Alibaba's metadata service lives here too)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast, deprecated (RFC 7526)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and broadcast
        "::/96",  # IPv4-compatible addresses, deprecated (RFC 4291); also :: and ::1
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo's embedded IPv4 is checked too)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local (fd00:ec2::254 is AWS metadata over IPv6)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local, deprecated (RFC 3879): not is_private in Python 3.11
        "ff00::/8",  # multicast
    )
]
# Concurrent lookups at most; more wait their turn within their own deadline.
RESOLVER_THREADS = 8
_resolver = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="webhook-dns")


class UnsafeURL(InvalidInput):
    type = "unsafe_webhook_url"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why an address may not receive webhooks, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return blocked_reason(embedded)
    for name in (
        "is_loopback",
        "is_private",
        "is_link_local",
        "is_site_local",
        "is_multicast",
        "is_unspecified",
        "is_reserved",
    ):
        if getattr(address, name, False):
            return f"{address} is {name.removeprefix('is_').replace('_', '-')}"
    for network in _EXTRA_BLOCKED:
        if address.version == network.version and address in network:
            return f"{address} is in {network}"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked webhook target: connect to `address`, speak to `host`."""

    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def url(self) -> str:
        """The URL to request: the host by name (IDNA), so that the Host header, TLS and
        the connection pool go by the host; the connection goes to `address`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_webhook_url(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    """Check a URL's shape: https (http only with private networks allowed), a host, no
    credentials. Returns (scheme, host, port, path with query)."""
    if len(url) > 2048:
        raise UnsafeURL("the URL is longer than 2048 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURL("the URL contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("the URL cannot be parsed") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeURL("webhook URLs must use https")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeURL("the URL must not carry credentials")
    try:
        # An internationalised name travels as IDNA ("xn--..."), in DNS, Host and TLS.
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeURL("the host is not a valid domain name") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def _lookup(host: str, port: int) -> list[tuple[Any, ...]]:
    # `socket.getaddrinfo` looked up at each call: tests stand in for DNS there.
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def _resolve(host: str, port: int, timeout_s: float | None) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.run_in_executor(_resolver, _lookup, host, port)
    except TimeoutError:
        raise UnsafeURL(f"the host {host[:100]!r} did not resolve within {timeout_s:g}s") from None
    except (socket.gaierror, UnicodeError, ValueError):
        # ValueError: a name the resolver cannot even encode (an IDNA label over 63
        # characters, a lone surrogate, a NUL byte).
        raise UnsafeURL(f"the host {host[:100]!r} does not resolve") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


async def resolve_target(url: str, allow_private: bool, *, timeout_s: float | None) -> Target:
    """Resolve a webhook URL and check every address it resolves to; `UnsafeURL` if any
    is not public (unless private networks are allowed), or if the name does not resolve
    within `timeout_s` (None: the caller's own deadline bounds it)."""
    scheme, host, port, path = parse_webhook_url(url, allow_private)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port, timeout_s)
    if not addresses:
        raise UnsafeURL(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = blocked_reason(address)
            if reason:
                raise UnsafeURL(f"webhook URLs must point to public addresses: {reason}")
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path)
