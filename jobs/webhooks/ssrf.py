"""The SSRF guard for customer webhook URLs.

A URL is checked at registration and again at every delivery: its host is
resolved, and unless `WEBHOOK_ALLOW_PRIVATE_NETWORKS` is true every address
must be public (not loopback, private, link-local, CGNAT, multicast,
unspecified, reserved or a cloud-metadata address, IPv4 or IPv6, including
IPv4-mapped, 6to4, Teredo and NAT64 forms). The delivery then connects to the
address that was checked, with the URL's host kept for the Host header and
TLS (SNI and certificate check), so a DNS answer that changes in between
(rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from jobs.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXTRA_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # CGNAT (Alibaba's metadata service lives here too)
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure metadata
        "192.0.0.0/24",
        "198.18.0.0/15",
        "fd00:ec2::/32",  # AWS metadata over IPv6 (inside fc00::/7, listed for clarity)
        "64:ff9b::/96",  # NAT64: checked through its embedded IPv4 below
    )
]


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
        "is_multicast",
        "is_unspecified",
        "is_reserved",
    ):
        if getattr(address, name):
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

    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        ip = ipaddress.ip_address(self.address)
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def parse_webhook_url(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    """Check a URL's shape: https (http only with private networks allowed), a host, no
    credentials. Returns (scheme, host, port, path with query)."""
    if len(url) > 2048:
        raise UnsafeURL("the URL is longer than 2048 characters")
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


async def resolve_target(url: str, allow_private: bool) -> Target:
    """Resolve a webhook URL and check every address it resolves to; `UnsafeURL` if any
    is not public (unless private networks are allowed)."""
    scheme, host, port, path = parse_webhook_url(url, allow_private)
    try:
        literal = ipaddress.ip_address(host)
        addresses: list[IPAddress] = [literal]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError):
            # ValueError: a name the resolver cannot even encode (an IDNA label over 63
            # characters, a lone surrogate, a NUL byte).
            raise UnsafeURL(f"the host {host[:100]!r} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise UnsafeURL(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = blocked_reason(address)
            if reason:
                raise UnsafeURL(f"webhook URLs must point to public addresses: {reason}")
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path)
