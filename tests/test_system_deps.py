"""scripts/system-deps.sh: what the tests need of the system, installed only when missing.

Each test runs the script with a PATH of stubs only: `id` says whose we are, `apt-get` and
`sudo` write down how they were called (and `apt-get install` puts the packages' commands on
the PATH), so nothing is installed and the machine's own tools do not count.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-deps.sh"
TOOLS = {
    "redis-server": "redis-server",
    "promtool": "prometheus",
    "chromium": "chromium",
    "unzip": "unzip",
}
"""Each command the script looks for, and the Debian package that brings it."""


@dataclass
class Run:
    returncode: int
    stderr: str
    calls: list[str]


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run(
    tmp_path: Path,
    *,
    present: tuple[str, ...] = tuple(TOOLS),
    uid: int = 0,
    apt: bool = True,
    apt_installs: bool = True,
    sudo: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    stubs = tmp_path / "bin"
    stubs.mkdir(parents=True)
    calls = tmp_path / "calls"
    calls.touch()
    (stubs / "python3").symlink_to(sys.executable)
    executable(stubs / "id", f"#!/bin/sh\necho {uid}\n")
    for tool in present:
        executable(stubs / tool, "#!/bin/sh\nexit 0\n")
    if apt:
        adds = "".join(
            f'  [ "$p" = {package} ] && printf "#!/bin/sh\\n" > {stubs}/{tool} '
            f"&& chmod +x {stubs}/{tool}\n"
            for tool, package in TOOLS.items()
        )
        install = f'if [ "$1" = install ]; then for p in "$@"; do\n{adds}  :\ndone; fi\n'
        body = install if apt_installs else ""
        executable(stubs / "apt-get", f'#!/bin/sh\necho "apt-get $*" >> {calls}\n{body}')
    if sudo:
        log = f'echo "sudo $*" >> {calls}'
        executable(stubs / "sudo", f'#!/bin/sh\n{log}\nshift\n[ "$1" = true ] || exec "$@"\n')
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(stubs), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return Run(done.returncode, done.stderr, calls.read_text().splitlines())


def test_nothing_missing_runs_no_apt_and_says_nothing(tmp_path):
    done = run(tmp_path)
    assert (done.returncode, done.calls, done.stderr) == (0, [], "")


def test_as_root_it_installs_what_is_missing_and_only_that(tmp_path):
    done = run(tmp_path, present=("redis-server", "unzip"))
    assert done.returncode == 0, done.stderr
    assert done.calls == [
        "apt-get update -q",
        "apt-get install -y -q --no-install-recommends prometheus chromium",
    ]
    assert "missing: promtool chromium" in done.stderr
    assert "everything the tests need is here" in done.stderr


def test_not_root_it_installs_through_sudo_without_a_password(tmp_path):
    done = run(tmp_path, present=("redis-server", "chromium", "unzip"), uid=1000, sudo=True)
    assert done.returncode == 0, done.stderr
    assert "sudo -n apt-get install -y -q --no-install-recommends prometheus" in done.calls


def test_not_root_without_sudo_it_explains_and_installs_nothing(tmp_path):
    done = run(tmp_path, present=("redis-server", "unzip"), uid=1000)
    assert done.returncode == 1
    assert done.calls == []
    assert "missing: promtool chromium" in done.stderr
    assert "not root, and no sudo that works without a password" in done.stderr
    assert "apt-get install -y --no-install-recommends prometheus chromium" in done.stderr


def test_without_apt_it_explains(tmp_path):
    done = run(tmp_path, present=(), apt=False)
    assert done.returncode == 1
    assert "there is no apt-get" in done.stderr
    assert "redis-server prometheus unzip chromium" in done.stderr


def test_a_package_that_brings_nothing_onto_the_path_fails(tmp_path):
    done = run(tmp_path, present=("redis-server", "chromium", "unzip"), apt_installs=False)
    assert done.returncode == 1
    assert "installed, but still missing: promtool" in done.stderr


def test_chromium_may_be_given_by_its_path(tmp_path):
    browser = tmp_path / "my-chromium"
    executable(browser, "#!/bin/sh\n")
    done = run(
        tmp_path, present=("redis-server", "promtool", "unzip"), env={"CHROMIUM": str(browser)}
    )
    assert (done.returncode, done.calls) == (0, [])
    missing = run(tmp_path / "other", env={"CHROMIUM": str(tmp_path / "nowhere")}, apt=False)
    assert "CHROMIUM=" in missing.stderr and missing.returncode == 1
