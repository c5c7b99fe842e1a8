"""The lock files match pyproject.toml: every dependency it names is pinned, with hashes, in
the right lock, at a version its specifier allows, and each lock was made from the current
inputs (its `# inputs: sha256:...` line). No network. When this fails: `scripts/lock.sh`.

`python tests/test_lock.py runtime|dev` prints a lock's inputs fingerprint (scripts/lock.sh
writes it); this module needs only the standard library at import time for that.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCKS = {"runtime": ROOT / "requirements.lock", "dev": ROOT / "requirements-dev.lock"}
FIX = "run scripts/lock.sh (it rewrites both locks from pyproject.toml)"


def lock_inputs(which: str) -> dict[str, list[str]]:
    """What a lock is made from: the build backend and the runtime dependencies, plus the
    dev extra for the dev lock (the bench extra is not locked)."""
    pyproject = tomllib.loads(PYPROJECT.read_text())
    project = pyproject["project"]
    inputs = {
        "build-system.requires": pyproject["build-system"]["requires"],
        "project.dependencies": project["dependencies"],
    }
    if which == "dev":
        inputs["project.optional-dependencies.dev"] = project["optional-dependencies"]["dev"]
    return inputs


def inputs_fingerprint(which: str) -> str:
    text = json.dumps(lock_inputs(which), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def parse_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """`{canonical name: (version, hashes)}` of a hashed requirements file; anything else
    than `name==version` with hashes is an error."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{path.name}: unexpected option line {line!r}"
        spec, *options = line.split(" --")
        hashes = frozenset(o.split("=", 1)[1].strip() for o in options if o.startswith("hash="))
        req = Requirement(spec.strip())
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"{path.name}: {spec!r} is not an exact pin"
        )
        assert hashes, f"{path.name}: {req.name} has no --hash"
        assert all(h.startswith("sha256:") for h in hashes), f"{path.name}: {req.name}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}: {req.name} is pinned twice"
        pins[name] = (specs[0].version, hashes)
    return pins


def check_named_dependencies_pinned(which: str) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = parse_lock(LOCKS[which])
    problems = []
    for group, requirements in lock_inputs(which).items():
        for text in requirements:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(
                {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
            ):
                continue
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                problems.append(f"{req.name} ({group}) is not in {LOCKS[which].name}")
            elif not req.specifier.contains(pin[0], prereleases=True):
                problems.append(f"{req.name}=={pin[0]} does not satisfy {text!r} ({group})")
    assert not problems, "; ".join(problems) + f": {FIX}"


def test_runtime_lock_pins_every_runtime_dependency_within_its_bounds():
    check_named_dependencies_pinned("runtime")


def test_dev_lock_pins_every_runtime_and_dev_dependency_within_its_bounds():
    check_named_dependencies_pinned("dev")


def test_each_lock_was_made_from_the_current_pyproject():
    for which, path in LOCKS.items():
        recorded = re.search(r"^# inputs: (sha256:[0-9a-f]{64})$", path.read_text(), re.M)
        assert recorded, f"{path.name} has no '# inputs:' line: {FIX}"
        assert recorded.group(1) == inputs_fingerprint(which), (
            f"{path.name} was made from another pyproject.toml (dependencies, dev extra or "
            f"build-system.requires changed since): {FIX}"
        )


def test_dev_lock_has_the_runtime_lock_exactly():
    """The tests run on what the image runs: same versions, same hashes."""
    runtime, dev = parse_lock(LOCKS["runtime"]), parse_lock(LOCKS["dev"])
    differ = {name: (pin, dev.get(name)) for name, pin in runtime.items() if dev.get(name) != pin}
    assert not differ, f"the dev lock differs from the runtime lock on {sorted(differ)}: {FIX}"


if __name__ == "__main__":
    print(inputs_fingerprint(sys.argv[1]))
