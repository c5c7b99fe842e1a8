"""Run the whole stack locally on embedded defaults, then a short demo through the public API.

ENVIRONMENT=development (plain: keys), with a SECRETS_KEY made once in .devstack/.

Redis: the one at REDIS_URL; when none answers and it is local, a redis-server of our own
(with AOF, data under .devstack/). S3: S3_ENDPOINT_URL, or moto's S3 server when unset
(development only). Claude: ANTHROPIC_API_KEY; without it, a local stand-in of the Messages
API (tests/support/fake_anthropic, development only: its answers are made up and name their
model "local-stand-in (not Claude)"). Then the API under uvicorn and the worker under the
arq CLI, both with ENVIRONMENT=development. The demo is scripts/demo.py.
Logs go to .devstack/*.log (DEVSTACK_DIR moves that folder). Ctrl-C stops everything;
--demo-only stops after the demo.
"""

from __future__ import annotations

import argparse
import base64
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
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import demo

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("DEVSTACK_DIR") or ROOT / ".devstack").resolve()
BIN = Path(sys.executable).parent
DEV_ADMIN_KEY = "dev-admin-key"
DEV_ACCOUNT_KEY = "dev-demo-key"
STAND_IN_KEY = "local-stand-in-checks-no-key"


def shown(path: Path) -> str:
    """`path` as the output names it: relative to the project when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


LOGS = f"{shown(STATE)}/*.log"


def say(message: str) -> None:
    """One line of the stack's output."""
    print(f"[dev] {message}", flush=True)


def port_open(host: str, port: int) -> bool:
    """Does something accept connections there?"""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A port that is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once `check()` is true; exit naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"[dev] {what} did not come up within {timeout:g}s; see {LOGS}")


class Stack:
    """The child processes we started, stopped in reverse order, each by its pid."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start `args` in a session of its own (Ctrl-C reaches us, not it), logging to
        `<STATE>/<name>.log`."""
        with open(STATE / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        """SIGTERM each process, newest first; SIGKILL one that is still up after 30 s."""
        stopped = []
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    say(f"{name} did not stop; killing it")
                    proc.kill()
                    proc.wait(5)
            stopped.append(f"{name} (pid {proc.pid})")
        if stopped:
            say(f"stopped {', '.join(stopped)}")
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
    say(f"Redis: started redis-server on port {port} (AOF in {shown(data)})")


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


def ensure_claude(stack: Stack, env: dict[str, str]) -> None:
    """Claude with ANTHROPIC_API_KEY; without it, the local stand-in of the Messages API."""
    if env.get("ANTHROPIC_API_KEY"):
        where = env.get("ANTHROPIC_BASE_URL") or "the Anthropic API"
        model = env.get("ANALYSIS_MODEL") or "ANALYSIS_MODEL's default"
        say(f"Claude: analyses call {where} with ANTHROPIC_API_KEY (model: {model})")
        return
    port = free_port()
    stack.start(
        "claude-stand-in",
        [sys.executable, "-m", "tests.support.fake_anthropic", "--port", str(port),
         "--answer-model", demo.STAND_IN_MODEL],
        env,
    )  # fmt: skip
    wait_for(lambda: port_open("127.0.0.1", port), 30, "the local stand-in of Claude")
    env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    env["ANTHROPIC_API_KEY"] = STAND_IN_KEY
    say(
        "Claude: ANTHROPIC_API_KEY is unset, so analyses go to a LOCAL STAND-IN of the\n"
        f"      Messages API (tests/support/fake_anthropic, port {port}), for development only.\n"
        "      It is NOT Claude: no model is called, every analysis is made up, and jobs\n"
        f"      name their model {demo.STAND_IN_MODEL!r}. Set ANTHROPIC_API_KEY for Claude."
    )


def development_secrets_key() -> str:
    """A SECRETS_KEY for development: made once, kept in `<STATE>/secrets_key` (0600), so
    what one run encrypts in a Redis that outlives it (webhook secrets), the next can read."""
    path = STATE / "secrets_key"
    if not path.exists():
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        path.touch(mode=0o600)
        path.write_text(key + "\n")
    return path.read_text().strip()


def ready(base: str) -> bool:
    """Does the API answer 200 on /health/ready?"""
    try:
        with urllib.request.urlopen(base + "/health/ready", timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-only", action="store_true", help="stop after the demo")
    options = parser.parse_args()

    STATE.mkdir(parents=True, exist_ok=True)
    # SIGTERM stops the stack as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    # Development, said explicitly: plain keys, an S3 emulator, made-up analyses. The API and
    # the worker refuse to start without SECRETS_KEY unless ENVIRONMENT=development.
    env["ENVIRONMENT"] = "development"
    if not env.get("SECRETS_KEY"):
        env["SECRETS_KEY"] = development_secrets_key()
    # The demo's webhook receiver listens on 127.0.0.1 (refused by default: SSRF).
    env.setdefault("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
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
        ensure_claude(stack, env)
        base = f"http://127.0.0.1:{api_port}"
        stack.start(
            "api",
            [str(BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", str(api_port)],
            env,
        )
        stack.start("worker", [str(BIN / "arq"), "jobs.worker.WorkerSettings"], env)
        wait_for(lambda: ready(base), 60, "the API")
        say(f"API: {base}  (docs: {base}/docs, OpenAPI: {base}/openapi.json)")
        say(f"keys: account 'demo' = {DEV_ACCOUNT_KEY}, operator = {DEV_ADMIN_KEY}")
        ok = demo.run(base, DEV_ACCOUNT_KEY)
        say("demo: done" if ok else f"demo: FAILED; see {LOGS}")
        if options.demo_only:
            return 0 if ok else 1
        say("running; Ctrl-C stops everything")
        while all(proc.poll() is None for _, proc in stack.procs):
            time.sleep(0.5)
        say(f"a process exited; stopping (see {LOGS})")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
