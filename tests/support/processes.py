"""Run the real worker and API as subprocesses, the way production starts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces `settings` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "JOB_"))}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        given = getattr(settings, name)
        if isinstance(given, SecretStr):
            value = given.get_secret_value()
        elif isinstance(given, list) and all(isinstance(v, SecretStr) for v in given):
            value = ",".join(v.get_secret_value() for v in given)
        elif name == "webhook_retry_schedule":
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        env[name.upper()] = str(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_worker(
    settings: Settings, log_path: Path, target: str = "tests.support.worker.WorkerSettings"
) -> subprocess.Popen:
    """`arq <target>` in its own process group, logging to `log_path`."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "arq"), target],
        cwd=ROOT,
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to a process we started, and reap it if it was a kill."""
    if proc.poll() is None:
        proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait(10)
