"""The README's promises: its two commands are there, both the test command and CI install what
the tests need of the system, and its settings table is whole. (The dev command runs in
tests/test_demo.py.)"""

from __future__ import annotations

import re
from pathlib import Path

from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert "scripts/dev.sh" in blocks and "scripts/test.sh" in blocks
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_test_command_and_ci_install_the_system_packages_the_same_way():
    for command in ("scripts/test.sh", ".ci/run"):
        assert "scripts/system-deps.sh" in (ROOT / command).read_text(), command


def test_readme_settings_table_lists_every_setting():
    first_cells = re.findall(r"^\| (`[A-Z0-9_]+`(?:, `[A-Z0-9_]+`)*) \|", README, re.M)
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)}
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"README settings table lacks {sorted(missing)}"
