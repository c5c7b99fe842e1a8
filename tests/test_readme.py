"""The README's promises: its two commands work as written, and its settings table is whole."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from jobs.settings import Settings
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert "scripts/dev.sh" in blocks and "scripts/test.sh" in blocks
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_settings_table_lists_every_setting():
    first_cells = re.findall(r"^\| (`[A-Z0-9_]+`(?:, `[A-Z0-9_]+`)*) \|", README, re.M)
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)}
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"README settings table lacks {sorted(missing)}"


@pytest.mark.slow
def test_dev_command_starts_the_stack_and_the_demo_job_succeeds(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_", "API_", "ADMIN_"))
    }
    # No Redis answers on this port, so the command must start its own redis-server.
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "API_PORT": str(free_port()),
        "S3_EMULATOR_PORT": str(free_port()),
    }
    done = subprocess.run(
        ["scripts/dev.sh", "--demo-only"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started redis-server" in done.stdout
    assert "started moto's S3 emulator" in done.stdout
    assert "/docs" in done.stdout
    assert '"state": "succeeded"' in done.stdout
    assert "manifest.json" in done.stdout
    assert "demo: the export succeeded" in done.stdout
