"""A Redis Sentinel deployment of the tests' own: a primary, its replicas and three
Sentinels (`redis-server --sentinel`), each a process on a free port of 127.0.0.1.

`kill_primary()` is the failover's cause (`kill -9`); `wait_promoted()` waits until every
Sentinel names the same new primary. Every process is ended by its pid in `stop()`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.services import RedisServer, free_port, redis_server_binary, wait_until

MASTER = "mymaster"


def sentinel_available() -> bool:
    """Whether this machine can run Sentinels (`redis-server --sentinel`)."""
    try:
        binary = redis_server_binary()
    except RuntimeError:
        return False
    answer = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return answer.returncode == 0


def node(port: int) -> redis.Redis:
    """A plain client of one Redis or Sentinel on 127.0.0.1 (no retries: it must fail fast)."""
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


def ask(port: int, *words: str) -> Any:
    """One command to a Redis or Sentinel on 127.0.0.1; its reply."""
    with node(port) as client:
        return client.execute_command(*words)


@dataclass
class SentinelDeployment:
    """A primary, `replicas` replicas and `sentinels` Sentinels (quorum 2)."""

    replicas: int = 2
    sentinels: int = 3
    down_after_ms: int = 2000
    failover_timeout_ms: int = 10000
    nodes: list[RedisServer] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinel_procs: list[subprocess.Popen] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lr-sentinel-")))
    killed_port: int | None = None

    @property
    def addresses(self) -> str:
        """`REDIS_SENTINELS` for this deployment."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelDeployment:
        # A full sync at once (Redis waits 5 s by default for more replicas to share it).
        quick = ["--repl-diskless-sync-delay", "0"]
        primary = RedisServer(appendonly=True, extra_args=quick).start()
        self.nodes.append(primary)
        for _ in range(self.replicas):
            follow = ["--replicaof", "127.0.0.1", str(primary.port)]
            self.nodes.append(RedisServer(appendonly=True, extra_args=quick + follow).start())
        wait_until(self._replicas_online, 20, "the replicas to sync with the primary")
        for n in range(self.sentinels):
            self._start_sentinel(n, primary.port)
        wait_until(self._sentinels_see_everyone, 30, "the Sentinels to find each other")
        return self

    def _start_sentinel(self, n: int, primary_port: int) -> None:
        port = free_port()
        conf = self.workdir / f"sentinel-{n}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER} {self.replicas}\n"
        )
        log = open(self.workdir / f"sentinel-{n}.log", "ab")  # noqa: SIM115 - the child owns it
        self.sentinel_procs.append(
            subprocess.Popen(
                [redis_server_binary(), str(conf), "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self.sentinel_ports.append(port)

    def _replicas_online(self) -> bool:
        for server in self.nodes[1:]:
            with node(server.port) as client:
                if client.info("replication")["master_link_status"] != "up":
                    return False
        return True

    def _sentinels_see_everyone(self) -> bool:
        for port in self.sentinel_ports:
            with node(port) as client:
                seen = client.sentinel_master(MASTER)
            if seen["num-other-sentinels"] != self.sentinels - 1:
                return False
            if seen["num-slaves"] != self.replicas:
                return False
        return True

    def master_per_sentinel(self) -> list[int | None]:
        """The primary's port as each Sentinel names it (None: no answer)."""
        ports: list[int | None] = []
        for port in self.sentinel_ports:
            try:
                with node(port) as client:
                    ports.append(int(client.sentinel_get_master_addr_by_name(MASTER)[1]))
            except (redis.RedisError, TypeError):
                ports.append(None)
        return ports

    def primary_port(self) -> int:
        """The port of the node that says it is the primary."""
        for server in self.nodes:
            if server.proc is None or server.proc.poll() is not None:
                continue
            with node(server.port) as client:
                if client.info("replication")["role"] == "master":
                    return server.port
        raise RuntimeError("no node is the primary")

    def kill_primary(self) -> int:
        """`kill -9` the primary; its port."""
        port = self.primary_port()
        server = next(n for n in self.nodes if n.port == port)
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)
        server.proc = None
        self.killed_port = port
        return port

    def promoted(self) -> int | None:
        """The new primary's port once every Sentinel names the same one, not the killed one."""
        ports = set(self.master_per_sentinel())
        if len(ports) == 1 and None not in ports and self.killed_port not in ports:
            return ports.pop()
        return None

    def wait_promoted(self, timeout: float = 60.0) -> int:
        """Wait until the Sentinels agree on a new primary; its port."""
        return wait_until(self.promoted, timeout, "the Sentinels to agree on a new primary", 0.02)

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for server in self.nodes:
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
