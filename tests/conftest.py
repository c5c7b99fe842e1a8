"""Fixtures: real services (a private Redis, an S3 server over HTTP), the app, and workers.

S3 is moto's server, a mock. A test marked `s3_servers` runs twice, against moto and
against SeaweedFS, a real S3 server (its ids end in `[moto]` and `[seaweedfs]`): the ones
whose subject is how S3 behaves (storage, documents, exports: multipart uploads and their
abort, presigned downloads and their headers, listing by prefix)."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.main import create_app
from api.sessions import Sessions
from jobs.engine.arq_adapter import LongrunWorker, build_worker
from jobs.engine.lifecycle import worker_settings
from jobs.engine.registry import Registry
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.kinds import TEST_REGISTRY
from tests.support.services import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisServer,
    S3Server,
    S3Service,
    SeaweedFSServer,
)

ACME_KEY, GLOBEX_KEY, ADMIN_KEY = "acme-key", "globex-key", "admin-key"
# The tests' own SECRETS_KEY (32 bytes, base64): not the built-in development key.
TEST_SECRETS_KEY = "dGVzdHMtb25seS1zZWNyZXRzLWtleS0zMi1ieXRlcyE="
ACME = {"Authorization": f"Bearer {ACME_KEY}"}
GLOBEX = {"Authorization": f"Bearer {GLOBEX_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


S3_SERVERS = ("moto", "seaweedfs")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "s3_servers: run the test against each S3 server: moto and SeaweedFS"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `s3_server` over both servers for tests marked `s3_servers`; pytest then
    runs them grouped by server, each server started once."""
    marked = metafunc.definition.get_closest_marker("s3_servers")
    if marked and "s3_server" in metafunc.fixturenames:
        metafunc.parametrize("s3_server", S3_SERVERS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[SeaweedFSServer]:
    server = SeaweedFSServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> S3Service:
    """The S3 server of this test: moto, or the one it is parametrised with (`s3_servers`).
    The servers themselves are session fixtures of their own, so switching starts none again."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'moto')}_server")


def make_settings(redis_url: str, s3_url: str, **overrides: Any) -> Settings:
    """Settings for tests: fast retries and loops, keys for two accounts and an operator
    (plain keys: development), a SECRETS_KEY of the tests' own."""
    values: dict[str, Any] = {
        "environment": "development",
        "secrets_key": TEST_SECRETS_KEY,
        "redis_url": redis_url,
        "s3_endpoint_url": s3_url,
        "s3_bucket": "longrun-test",
        "aws_access_key_id": S3_ACCESS_KEY,
        "aws_secret_access_key": S3_SECRET_KEY,
        "api_keys": {"acme": [f"plain:{ACME_KEY}"], "globex": [f"plain:{GLOBEX_KEY}"]},
        "admin_api_keys": [f"plain:{ADMIN_KEY}"],
        "job_retry_base_seconds": 0.05,
        "job_retry_max_seconds": 0.5,
        "worker_poll_delay_seconds": 0.02,
        "worker_lease_seconds": 2.0,
        "reconcile_interval_seconds": 0.2,
        "job_timeout_seconds": 10.0,
        "worker_metrics_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def settings(
    redis_server: RedisServer, s3_server: S3Service, fake_claude: FakeAnthropic
) -> Settings:
    """Fresh settings over an emptied Redis and S3, with the bucket made."""
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    await redis.aclose()
    s3_server.reset()
    settings = make_settings(
        redis_server.url,
        s3_server.url,
        anthropic_api_key="sk-ant-test-key",
        anthropic_base_url=fake_claude.url,
    )

    async with open_storage(settings) as storage:
        await storage.ensure_bucket()
    return settings


async def operator_session(settings: Settings, key: str = ADMIN_KEY) -> str:
    """A dashboard session opened with an operator key, as logging in opens one: the
    session cookie's value."""
    redis = Redis.from_url(settings.redis_url)
    try:
        return await Sessions(redis, settings).open(hashlib.sha256(key.encode()).hexdigest())
    finally:
        await redis.aclose()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis: Redis, settings: Settings) -> JobStore:
    """The job store, with the service's kinds and the test kinds."""
    return JobStore(redis, settings, TEST_REGISTRY)


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, driven in-process over ASGI."""
    app = create_app(settings, TEST_REGISTRY)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as c:
        yield c


@asynccontextmanager
async def running_worker(
    settings: Settings, registry: Registry = TEST_REGISTRY
) -> AsyncIterator[LongrunWorker]:
    """A real worker (the engine's arq worker), running in this event loop until the block
    ends."""
    worker = build_worker(worker_settings(settings, registry), handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        # Stop the jobs first: a job task cancelled before arq's own handler catches it
        # would make `close()` re-raise its CancelledError and skip `on_shutdown`.
        worker.handle_sig(signal.SIGUSR1)
        await _bounded(
            asyncio.gather(*worker.tasks.values(), return_exceptions=True), "the worker's jobs"
        )
        worker.tasks.clear()
        await _bounded(worker.close(), "the worker's close()")
        task.cancel()
        with suppress(asyncio.CancelledError):
            await _bounded(task, "the worker's main task")


async def _bounded(step: Awaitable[Any], what: str, timeout: float = 60.0) -> None:
    """Await a teardown step; past `timeout`, fail naming it, with the await chain it is
    stuck in on stderr (a hang would otherwise end only at pytest's timeout, saying nothing)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        task.result()
        return
    for pending in asyncio.all_tasks():
        print(f"task {pending.get_name()}:", file=sys.stderr)
        awaited: Any = pending.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno}", file=sys.stderr)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    task.cancel()
    raise AssertionError(f"{what} did not end within {timeout:g} s")


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[LongrunWorker]:
    async with running_worker(settings) as w:
        yield w


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Await `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


@pytest.fixture(scope="session")
def fake_claude() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def claude(fake_claude: FakeAnthropic) -> FakeAnthropic:
    """The fake Messages API, reset for this test."""
    fake_claude.reset()
    return fake_claude
