"""The HTTP client of webhook deliveries: each connection goes to the address the SSRF guard
checked, and connections are pooled per target host.

httpx pools connections by the origin of the URL. Were the URL to name the checked address
(`https://93.184.216.34/...`) with the host only in SNI and the Host header, a connection
opened (and its certificate verified) for one host would be reused for any other host on
that address, whose certificate is never checked. So the URL names the host, and the pool's
network backend connects to the address checked for that host by the attempt running in
this task (`WebhookClient.pinned`); asked to connect anywhere else, it refuses. TLS (SNI,
certificate) and the Host header follow the URL. The client ignores proxy settings from the
environment: a proxy would resolve the name again itself.

Checked against httpx 0.28.1 and httpcore 1.0.9: httpx's `AsyncHTTPTransport` keeps its
httpcore pool in `_pool`, and httpcore opens a connection in the task of the request it is
for. `tests/test_security.py::test_a_connection_verified_for_one_host_never_serves_another`
and the DNS rebinding tests there break if either changes.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx
from redis.asyncio import Redis

from jobs.settings import Settings
from jobs.webhooks.ssrf import Target

# (host, port, address): where the attempt running in this task may connect.
_PIN: ContextVar[tuple[str, int, str] | None] = ContextVar("webhook_pin", default=None)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the checked address of the host a connection is for, nowhere else."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pin = _PIN.get()
        if pin is None or pin[:2] != (host, port):
            raise httpcore.ConnectError(f"no checked address for {host}:{port}")
        return await self._inner.connect_tcp(
            pin[2], port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )  # fmt: skip

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not delivered over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its request and error mapping, its response stream) over an
    httpcore pool whose connections go to the pinned address."""

    def __init__(self, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> None:
        # Not super().__init__(): it would build a second pool, and an SSL context with it.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(),
        )


class WebhookClient:
    """The one HTTP client of a worker's webhook attempts (no redirects, no proxies)."""

    def __init__(
        self,
        timeout_s: float,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.http = httpx.AsyncClient(
            transport=_PinnedTransport(verify, limits),
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
        )

    @staticmethod
    @contextmanager
    def pinned(target: Target) -> Iterator[None]:
        """While this block runs, a connection this task opens for the target's host goes
        to the address the guard checked."""
        token = _PIN.set((target.host, target.port, target.address))
        try:
            yield
        finally:
            _PIN.reset(token)

    async def aclose(self) -> None:
        await self.http.aclose()


@asynccontextmanager
async def open_webhook_client(settings: Settings, redis: Redis) -> AsyncIterator[WebhookClient]:
    """The worker's `WebhookClient`, closed when the worker stops (`redis`: unused; a
    domain resource is made from the settings and the worker's Redis)."""
    client = WebhookClient(settings.webhook_timeout_seconds)
    try:
        yield client
    finally:
        await client.aclose()
