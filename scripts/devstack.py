"""Run the whole stack locally on embedded defaults, then a short demo through the public API.

ENVIRONMENT=development (plain: keys), with a SECRETS_KEY made once in .devstack/.

Redis: the one at REDIS_URL; when none answers and it is local, a redis-server of our own
(with AOF, data under .devstack/). S3: S3_ENDPOINT_URL, or moto's S3 server when unset
(development only). Then the API under uvicorn and the worker under the arq CLI.
Logs go to .devstack/*.log. Ctrl-C stops everything; --demo-only stops after the demo.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".devstack"
BIN = Path(sys.executable).parent
DEV_ADMIN_KEY = "dev-admin-key"
DEV_ACCOUNT_KEY = "dev-demo-key"


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"[dev] {what} did not come up within {timeout:g}s; see {STATE}/*.log")


class Stack:
    """The child processes we started, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    say(f"{name} did not stop; killing it")
                    proc.kill()
                    proc.wait(5)
        self.procs.clear()


def ensure_redis(stack: Stack, env: dict[str, str]) -> None:
    url = urlparse(env["REDIS_URL"])
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if port_open(host, port):
        say(f"Redis: using the one at {env['REDIS_URL']}")
        return
    binary = shutil.which("redis-server")
    if host not in ("127.0.0.1", "localhost") or binary is None:
        raise SystemExit(
            f"[dev] no Redis answers at {env['REDIS_URL']}. Start one, or install redis-server "
            "(Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis) "
            "and run this again."
        )
    data = STATE / "redis"
    data.mkdir(parents=True, exist_ok=True)
    stack.start(
        "redis",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--dir", str(data)],
        env,
    )  # fmt: skip
    wait_for(lambda: port_open(host, port), 15, "redis-server")
    say(f"Redis: started redis-server on port {port} (AOF in {data})")


def ensure_s3(stack: Stack, env: dict[str, str]) -> None:
    if env.get("S3_ENDPOINT_URL"):
        say(f"S3: using {env['S3_ENDPOINT_URL']}")
        return
    port = int(env.get("S3_EMULATOR_PORT", "4566"))
    if port_open("127.0.0.1", port):
        port = free_port()
    env["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    env.setdefault("AWS_ACCESS_KEY_ID", "dev")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "dev")
    stack.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env)
    wait_for(lambda: port_open("127.0.0.1", port), 30, "the S3 emulator")
    bucket = env.get("S3_BUCKET", "longrun")
    request = urllib.request.Request(f"{env['S3_ENDPOINT_URL']}/{bucket}", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()
    say(f"S3: started moto's S3 emulator on port {port} with bucket {bucket} (development only)")


def call(
    base: str, method: str, path: str, key: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def follow(base: str, job: dict[str, Any], key: str) -> dict[str, Any]:
    """Poll a job until it finishes (60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job["state"] not in ("succeeded", "failed"):
        time.sleep(0.2)
        _, job = call(base, "GET", f"/v1/jobs/{job['id']}", key)
    return job


def demo(base: str) -> bool:
    """The main job end to end: store a document, export its user's data, download it."""
    key = DEV_ACCOUNT_KEY
    say("demo: POST /v1/documents (stored in S3)")
    document = {"user_id": "demo-user", "title": "Welcome", "text": "Hello from longrun.\n" * 20}
    status, doc = call(base, "POST", "/v1/documents", key, document)
    if status != 201:
        say(f"demo: storing the document failed: {status} {doc}")
        return False
    say(f"demo: 201 Created, document {doc['id']}")
    say("demo: POST /v1/exports {user_id: demo-user, format: zip}")
    status, job = call(base, "POST", "/v1/exports", key, {"user_id": "demo-user", "format": "zip"})
    if status != 202:
        say(f"demo: enqueue failed: {status} {job}")
        return False
    say(f"demo: 202 Accepted, job {job['id']} is {job['state']}; following it")
    job = follow(base, job, key)
    say(f"demo: GET /v1/jobs/{job['id']} ->\n{json.dumps(job, indent=2)}")
    if job["state"] != "succeeded":
        say("demo: the export did not succeed; see .devstack/*.log")
        return False
    with urllib.request.urlopen(job["result"]["download_url"], timeout=10) as answer:
        archive = zipfile.ZipFile(io.BytesIO(answer.read()))
    say(f"demo: downloaded the archive through download_url: {archive.namelist()}")
    _, queues = call(base, "GET", "/health/queues", key)
    say(f"demo: GET /health/queues -> {json.dumps(queues)}")
    say("demo: the export succeeded")
    return True


def dev_secrets_key() -> str:
    """The dev stack's SECRETS_KEY: made once, kept in .devstack/ so that webhook secrets
    stay readable from one run to the next."""
    path = STATE / "secrets-key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-only", action="store_true", help="stop after the demo")
    options = parser.parse_args()

    STATE.mkdir(exist_ok=True)
    # SIGTERM stops the stack as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    # Development, said so: the plain: keys below are accepted only there.
    env.setdefault("ENVIRONMENT", "development")
    env.setdefault("SECRETS_KEY", dev_secrets_key())
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("API_KEYS", json.dumps({"demo": [f"plain:{DEV_ACCOUNT_KEY}"]}))
    env.setdefault("ADMIN_API_KEYS", json.dumps([f"plain:{DEV_ADMIN_KEY}"]))
    api_port = int(env.get("API_PORT", "8000"))
    env.setdefault("WORKER_METRICS_PORT", str(free_port()))
    if port_open("127.0.0.1", api_port):
        raise SystemExit(f"[dev] port {api_port} is taken; set API_PORT to a free port")

    stack = Stack()
    try:
        ensure_redis(stack, env)
        ensure_s3(stack, env)
        base = f"http://127.0.0.1:{api_port}"
        stack.start(
            "api",
            [str(BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", str(api_port)],
            env,
        )
        stack.start("worker", [str(BIN / "arq"), "jobs.worker.WorkerSettings"], env)
        wait_for(lambda: call(base, "GET", "/health/ready", "")[0] == 200, 60, "the API")
        say(f"API: {base}  (docs: {base}/docs, OpenAPI: {base}/openapi.json)")
        say(f"keys: account 'demo' = {DEV_ACCOUNT_KEY}, operator = {DEV_ADMIN_KEY}")
        ok = demo(base)
        if options.demo_only:
            return 0 if ok else 1
        say("running; Ctrl-C stops everything")
        while all(proc.poll() is None for _, proc in stack.procs):
            time.sleep(0.5)
        say("a process exited; stopping (see .devstack/*.log)")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
