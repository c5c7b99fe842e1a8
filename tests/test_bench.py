"""The benchmark command in its tiny mode, `python -m bench --quick`: every benchmark runs end
to end against its peers and the report and charts are written, so none of it can rot.
No timing is asserted: the figures of a quick run mean nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import NAMES

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "bench" / "results" / "quick"

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)
def test_quick_bench_runs_every_benchmark_and_writes_the_report():
    # It installs what it lacks first (the bench extra, the Celery virtualenv, wrk).
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runlog = json.loads((QUICK / "runlog.json").read_text())
    assert {name: step["exit"] for name, step in runlog.items()} == dict.fromkeys(NAMES, 0)
    for name in NAMES:
        assert json.loads((QUICK / f"{name}.json").read_text())
    report = (QUICK / "RESULTS.md").read_text()
    assert "## Summary" in report and "not measured" not in report
    charts = re.findall(r"!\[[^\]]*\]\((charts/[a-z_]+\.png)\)", report)
    assert len(charts) == len(NAMES)
    for chart in charts:
        assert (QUICK / chart).read_bytes().startswith(b"\x89PNG")
    # The committed figures are never touched by a quick run.
    assert "QUICK RUN" in report
