"""The chaos run's stack and its faults: every part a real process or server of its own.

A private redis-server with AOF (or, where Sentinel runs and `CHAOS_FAILOVER` is not 0,
a primary with two replicas and three Sentinels, `REDIS_MIN_REPLICAS=1`, whose primary
is killed instead of Redis being restarted), moto's S3 server behind a proxy (so S3 can be taken
away without losing its contents), the fake Messages API, one webhook receiver per
endpoint (steady, flaky, or behind a proxy that goes down), each knowing only its own
endpoint's secret, the API under uvicorn and two workers under the `arq` CLI. Faults are
injected on a fixed schedule, jittered by a seeded RNG; each leaves evidence that it
took effect (`evidence()`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_lib

from jobs.settings import Settings
from tests.conftest import make_settings
from tests.support.api_server import ApiServer
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.processes import kill, start_worker
from tests.support.proxy import Proxy
from tests.support.receiver import Receiver
from tests.support.sentinel import SentinelDeployment, sentinel_available
from tests.support.services import RedisServer, S3Server

ACCOUNTS = {"acme": "chaos-acme-key", "globex": "chaos-globex-key", "initech": "chaos-initech-key"}
ADMIN_KEY = "chaos-admin-key"
WORKER_TARGET = "jobs.worker.WorkerSettings"


class FlakyReceiver(Receiver):
    """A receiver that fails the first two attempts of about a third of the webhook ids."""

    def _answer_for(self, headers: dict[str, str]) -> str:
        webhook_id = headers.get("webhook-id", "")
        if hashlib.sha256(webhook_id.encode()).digest()[0] % 3:
            return "ok"
        with self._lock:
            seen = sum(1 for r in self.received if r["headers"].get("webhook-id") == webhook_id)
        return "500" if seen < 2 else "ok"


def failover_wanted() -> bool:
    """Whether the chaos run uses Sentinel and fails Redis over (`CHAOS_FAILOVER=0`: no)."""
    return os.environ.get("CHAOS_FAILOVER", "1") != "0" and sentinel_available()


@dataclass
class Fault:
    at_s: float
    name: str
    action: Callable[[], None]


@dataclass
class ChaosStack:
    """Everything the chaos run talks to; `stop()` ends every process it started, by pid."""

    workdir: Path
    # Receiver name (the endpoint it serves) -> "steady", "flaky" or "downed".
    layout: dict[str, str] = field(default_factory=dict)
    redis: RedisServer = field(default_factory=lambda: RedisServer(appendonly=True))
    s3: S3Server = field(default_factory=S3Server)
    claude: FakeAnthropic = field(default_factory=FakeAnthropic)
    receivers: dict[str, Receiver] = field(default_factory=dict)
    proxies: dict[str, Proxy] = field(default_factory=dict)
    workers: list[subprocess.Popen] = field(default_factory=list)
    retired: list[subprocess.Popen] = field(default_factory=list)
    api: ApiServer | None = None
    settings: Settings | None = None
    faults_done: list[tuple[float, str]] = field(default_factory=list)
    redis_runs: list[str] = field(default_factory=list)
    failover: bool = field(default_factory=failover_wanted)
    sentinel: SentinelDeployment | None = None
    _spawned: int = 0

    def start(self) -> ChaosStack:
        ha: dict[str, object] = {}
        if self.failover:
            self.sentinel = SentinelDeployment().start()
            self.redis.port = self.sentinel.primary_port()  # REDIS_URL: only its db counts
            ha = {"redis_sentinels": self.sentinel.addresses, "redis_min_replicas": 1}
        else:
            self.redis.start()
        self.s3.start()
        self.proxies["s3"] = Proxy(self.s3.port).start()
        self.claude.delay_s = 0.2  # long enough that kills land mid-call
        self.claude.start()
        for name, behaviour in self.layout.items():
            receiver = (FlakyReceiver if behaviour == "flaky" else Receiver)().start()
            self.receivers[name] = receiver
            if behaviour == "downed":
                self.proxies[name] = Proxy(receiver.port).start()
        self.redis_runs.append(self._redis_run_id())
        self.settings = make_settings(
            self.redis.url,
            self.proxies["s3"].url,
            s3_bucket="longrun-chaos",
            api_keys={a: [f"plain:{k}"] for a, k in ACCOUNTS.items()},
            admin_api_keys=[f"plain:{ADMIN_KEY}"],
            anthropic_api_key="sk-ant-chaos",
            anthropic_base_url=self.claude.url,
            job_max_tries=10,
            job_retry_base_seconds=1.0,
            job_retry_max_seconds=20.0,
            job_timeout_seconds=60.0,
            worker_lease_seconds=3.0,
            worker_drain_seconds=5,
            worker_poll_delay_seconds=0.05,
            reconcile_interval_seconds=1.0,
            analysis_concurrency=20,
            webhook_allow_private_networks=True,
            webhook_retry_schedule=[0, 1, 2, 4, 8, 15, 30, 30],
            webhook_timeout_seconds=5.0,
            redis_retry_seconds=30.0,
            **ha,
        )
        self.api = ApiServer(self.settings, self.workdir / "api.log")
        self.workers = [self._spawn_worker(), self._spawn_worker()]
        return self

    def receiver_url(self, name: str) -> str:
        if name in self.proxies:
            return f"{self.proxies[name].url}/hooks"
        return self.receivers[name].url

    def _primary_port(self) -> int:
        return self.sentinel.primary_port() if self.sentinel is not None else self.redis.port

    def _redis_run_id(self) -> str:
        client = redis_lib.Redis(port=self._primary_port(), socket_timeout=5)
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()

    def redis_connections(self) -> int:
        """Connections the running redis-server (the primary) has accepted since it started."""
        client = redis_lib.Redis(port=self._primary_port(), socket_timeout=5)
        try:
            return int(client.info("stats")["total_connections_received"])
        finally:
            client.close()

    def _spawn_worker(self) -> subprocess.Popen:
        self._spawned += 1
        assert self.settings is not None
        return start_worker(
            self.settings, self.workdir / f"worker-{self._spawned}.log", target=WORKER_TARGET
        )

    # The faults -------------------------------------------------------------------------

    def kill_worker(self, slot: int) -> None:
        """kill -9 the worker in `slot` and start a new one in its place."""
        kill(self.workers[slot])
        self.retired.append(self.workers[slot])
        self.workers[slot] = self._spawn_worker()

    def sigterm_worker(self, slot: int) -> None:
        """SIGTERM the worker in `slot` (a deploy) and start its successor at once."""
        old = self.workers[slot]
        kill(old, signal.SIGTERM)
        self.retired.append(old)
        self.workers[slot] = self._spawn_worker()

    def restart_redis(self) -> None:
        """kill -9 Redis and start it again on the same port and AOF file."""
        assert self.redis.proc is not None
        self.redis.proc.kill()
        self.redis.proc.wait(10)
        self.redis.start()
        self.redis_runs.append(self._redis_run_id())

    def fail_over(self) -> None:
        """kill -9 the Redis primary; the Sentinels promote a replica (waited for here)."""
        assert self.sentinel is not None
        self.sentinel.kill_primary()
        self.sentinel.wait_promoted()
        self.redis_runs.append(self._redis_run_id())

    def set_down(self, proxy: str, down: bool) -> None:
        """Take S3 (`"s3"`) or every downed receiver (`"downed"`) away, or bring it back."""
        names = [proxy] if proxy in self.proxies else self.downed()
        for name in names:
            self.proxies[name].set_down(down)

    def downed(self) -> list[str]:
        """The receivers that go down."""
        return [name for name, behaviour in self.layout.items() if behaviour == "downed"]

    def schedule(self, seed: int) -> list[Fault]:
        """The fault schedule, seconds after the load starts, each jittered by up to 1 s."""
        rng = random.Random(seed)

        def at(t: float) -> float:
            return round(t + rng.uniform(0, 1), 2)

        return sorted(
            [
                Fault(at(3), "kill -9 worker 0", lambda: self.kill_worker(0)),
                Fault(at(8), "S3 down (15 s)", lambda: self.set_down("s3", True)),
                Fault(at(10), "receivers down (20 s)", lambda: self.set_down("downed", True)),
                Fault(at(14), "kill -9 worker 1", lambda: self.kill_worker(1)),
                Fault(at(20), "SIGTERM worker 0", lambda: self.sigterm_worker(0)),
                Fault(at(8) + 15, "S3 back", lambda: self.set_down("s3", False)),
                Fault(at(27), "kill -9 the Redis primary (Sentinel fails over)", self.fail_over)
                if self.failover
                else Fault(at(27), "kill -9 Redis, restart (AOF)", self.restart_redis),
                Fault(at(10) + 20, "receivers back", lambda: self.set_down("downed", False)),
                Fault(at(34), "kill -9 worker 1", lambda: self.kill_worker(1)),
            ],
            key=lambda f: f.at_s,
        )  # fmt: skip

    async def inject(self, faults: list[Fault], started: float) -> None:
        """Run each fault at its time (off the event loop: some of them wait on processes)."""
        for fault in faults:
            await asyncio.sleep(max(0.0, started + fault.at_s - time.monotonic()))
            await asyncio.to_thread(fault.action)
            self.faults_done.append((round(time.monotonic() - started, 2), fault.name))

    def stop(self) -> None:
        for proc in self.workers + self.retired:
            kill(proc)
        if self.api is not None:
            self.api.stop()
        for proxy in self.proxies.values():
            proxy.stop()
        for receiver in self.receivers.values():
            receiver.stop()
        self.claude.stop()
        self.s3.stop()
        if self.sentinel is not None:
            self.sentinel.stop()
        self.redis.stop()
