"""The first command of the README: `scripts/dev.sh --demo-only` sets up the stack, runs the
demo (a document analysed by the local stand-in of Claude, its webhook verified, the user's
export read) and stops everything it started."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.services import free_ports

ROOT = Path(__file__).resolve().parents[1]
STAND_IN_MODEL = "local-stand-in (not Claude)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_dev_command_runs_the_demo_with_the_stand_in_and_stops_what_it_started(tmp_path):
    cleared = ("S3_", "AWS_", "API_", "ADMIN_", "ANTHROPIC_", "ENVIRONMENT", "SECRETS_KEY",
               "WEBHOOK_", "REDIS_", "WORKER_", "ANALYSIS_")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(cleared)}
    redis_port, api_port, s3_port = free_ports(3)
    # No Redis answers on this port, so the command must start its own redis-server.
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "API_PORT": str(api_port),
        "S3_EMULATOR_PORT": str(s3_port),
        "DEVSTACK_DIR": str(tmp_path),
    }
    done = subprocess.run(
        ["scripts/dev.sh", "--demo-only"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in tmp_path.glob("*.log"))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr + logs

    assert f"started redis-server on port {redis_port}" in out
    assert "started moto's S3 emulator" in out
    assert f"http://127.0.0.1:{api_port}/docs" in out
    # Without ANTHROPIC_API_KEY: the stand-in, said to be one, and named so by the analysis.
    assert "LOCAL STAND-IN" in out and "development only" in out and "NOT Claude" in out
    assert f"succeeded: model {STAND_IN_MODEL!r}" in out
    assert "the analysis (made up by the LOCAL STAND-IN, not Claude):" in out
    assert re.search(r"^    \| Analysis of \d+ characters\.$", out, re.M), out
    # The webhook, received and verified with the endpoint's secret.
    assert re.search(r"webhook analysis\.completed for job_\w+ received", out), out
    assert "verified with the endpoint's secret (verify_webhook)" in out
    # The export, downloaded, its one document counted.
    assert "manifest.json: 1 entry" in out
    assert re.search(r"^\[demo\]\s+documents/doc_\w+\.json", out, re.M), out
    assert "[dev] demo: done" in out

    # A development key was made once for this folder, readable by its owner only.
    key = tmp_path / "secrets_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # Everything it started is stopped, by pid.
    stopped = re.search(r"^\[dev\] stopped (.*)$", out, re.M)
    assert stopped, out
    pids = {name: int(pid) for name, pid in re.findall(r"([\w-]+) \(pid (\d+)\)", stopped[1])}
    assert set(pids) == {"worker", "api", "claude-stand-in", "s3", "redis"}
    assert not [name for name, pid in pids.items() if alive(pid)]
