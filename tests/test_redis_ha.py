"""Redis high availability, piece by piece: the settings, the one pool factory (plain or
through Sentinel), failover errors in the error tree, and `REDIS_MIN_REPLICAS`' WAIT.
The failover itself, with real Sentinels, is tests/test_failover.py."""

from __future__ import annotations

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError, WatchError

from jobs.clients import (
    BlockingSentinelConnectionPool,
    FailoverConnection,
    FailoverSSLConnection,
    redis_pool,
    wait_for_replicas,
)
from jobs.engine.arq_adapter import worker_arguments
from jobs.engine.retry import as_service_error
from jobs.errors import TransientError
from jobs.settings import Settings, SettingsError, load_settings
from tests.conftest import ACME, api_client

DEV = {"environment": "development"}


def test_sentinels_are_read_as_host_port_pairs_in_every_form():
    assert load_settings(**DEV).redis_sentinels == []
    text = load_settings(**DEV, redis_sentinels=" s1:26379, s2:26380 ,[::1]:26381")
    assert text.redis_sentinels == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    as_json = load_settings(**DEV, redis_sentinels='["s1:1", ["s2", 2]]')
    assert as_json.redis_sentinels == [("s1", 1), ("s2", 2)]
    assert load_settings(**DEV).redis_sentinel_master == "mymaster"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("redis_sentinels", "s1"),
        ("redis_sentinels", "s1:0"),
        ("redis_sentinels", "s1:70000"),
        ("redis_sentinels", ":26379"),
        ("redis_sentinels", "s1:port"),
        ("redis_sentinel_master", ""),
        ("redis_min_replicas", "-1"),
        ("redis_replica_timeout_seconds", "0"),
    ],
)
def test_bad_ha_settings_stop_the_process_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name.upper(), value)
    with pytest.raises(SettingsError, match=name.upper()):
        load_settings(**DEV)


async def test_without_sentinels_the_pool_connects_to_redis_url():
    pool = redis_pool(load_settings(**DEV, redis_url="redis://10.1.2.3:6390/4"))
    assert type(pool) is BlockingConnectionPool
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"]) == ("10.1.2.3", 6390)
    assert pool.connection_kwargs["db"] == 4
    await pool.aclose()


async def test_with_sentinels_redis_url_gives_only_the_database_and_password():
    settings = load_settings(
        **DEV,
        redis_url="redis://:s3cret@ignored-host:1/3",
        redis_sentinels="127.0.0.1:26379,127.0.0.1:26380",
        redis_sentinel_master="primary-a",
    )
    pool = redis_pool(settings)
    assert isinstance(pool, BlockingSentinelConnectionPool)
    assert isinstance(pool, BlockingConnectionPool)  # blocks when every connection is busy
    assert pool.service_name == "primary-a" and pool.is_master
    assert pool.connection_class is FailoverConnection
    assert "host" not in pool.connection_kwargs and "port" not in pool.connection_kwargs
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "s3cret"
    hosts = [c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels]
    assert hosts == [26379, 26380]
    await pool.aclose()
    tls = redis_pool(settings.model_copy(update={"redis_url": "rediss://h:1/0"}))
    assert tls.connection_class is FailoverSSLConnection
    await tls.aclose()


async def test_the_worker_gets_its_redis_from_the_same_factory():
    settings = load_settings(**DEV, redis_sentinels="127.0.0.1:26379")
    arguments = worker_arguments(settings, ["k"], lambda kind: _noop, _hook, _hook)
    assert isinstance(arguments["redis_pool"].connection_pool, BlockingSentinelConnectionPool)
    assert arguments["redis_settings"].sentinel  # for `arq --check`
    await arguments["redis_pool"].aclose()


async def _noop(ctx: dict, job_id: str) -> None:
    return None


async def _hook(ctx: dict) -> None:
    return None


@pytest.mark.parametrize(
    "exc",
    [
        RedisConnectionError("Connection refused"),
        MasterNotFoundError("No master found for 'mymaster'"),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError("MASTERDOWN Link with MASTER is down"),
        ResponseError("UNBLOCKED force unblock from blocking operation"),
    ],
)
def test_failover_errors_are_transient(exc):
    error = as_service_error(exc)
    assert isinstance(error, TransientError) and error.type == "redis_unavailable"


def test_a_connection_lost_under_watch_is_transient_a_lost_race_is_not():
    lost = WatchError("A ConnectionError occurred on while watching one or more keys")
    lost.__context__ = RedisConnectionError("Connection closed by server.")
    assert isinstance(as_service_error(lost), TransientError)
    assert not isinstance(as_service_error(WatchError("Watched variable changed.")), TransientError)
    assert not isinstance(as_service_error(ResponseError("ERR unknown command")), TransientError)


async def test_wait_for_replicas_refuses_a_write_no_replica_holds(settings: Settings):
    wanting = settings.model_copy(
        update={"redis_min_replicas": 1, "redis_replica_timeout_seconds": 0.1}
    )
    async with Redis.from_url(settings.redis_url).client() as conn:
        await conn.set("lr:test:ha", 1)
        await wait_for_replicas(conn, settings)  # 0: no WAIT at all
        with pytest.raises(TransientError) as refused:
            await wait_for_replicas(conn, wanting)
    assert refused.value.type == "replicas_unavailable" and refused.value.retry_after


async def test_an_enqueue_without_its_replicas_is_a_503_with_retry_after(settings: Settings):
    wanting = settings.model_copy(
        update={"redis_min_replicas": 1, "redis_replica_timeout_seconds": 0.1}
    )
    async with api_client(wanting) as client:
        doc = await client.post(
            "/v1/documents", json={"user_id": "u", "title": "t", "text": "hello"}, headers=ACME
        )
        assert doc.status_code == 201, doc.text
        answer = await client.post(
            f"/v1/documents/{doc.json()['id']}/analyses", json={}, headers=ACME
        )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "replicas_unavailable"
    assert int(answer.headers["retry-after"]) >= 1
