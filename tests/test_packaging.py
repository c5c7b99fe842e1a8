"""The installed package is the repository's: a wheel built from the checkout holds every
file the code loads at run time (Lua scripts, templates), not just the Python modules. The
Dockerfile installs the project with pip, and the arq CLI imports the installed copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked(*patterns: str) -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", *patterns],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return set(out.split())


def test_the_wheel_holds_every_lua_script_and_template(tmp_path: Path) -> None:
    # Built from a copy of the tracked files: a build/ left in the checkout would be reused.
    source = tmp_path / "source"
    for name in tracked("pyproject.toml", "README.md", "api", "jobs"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = tracked("jobs/*.lua", "api/templates/*")
    assert needed, "no Lua script or template found in git"
    assert needed <= names, sorted(needed - names)
