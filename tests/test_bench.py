"""The benchmark report says exactly what the committed JSON says, and nothing else.

The fast tests build RESULTS.md from a small fixture of result files (no benchmark runs):
each figure's median and range, each target's verdict by the worst-repetition rule, each
section's own commit, and no number that the JSON does not hold. The committed RESULTS.md
and README table must be what the report builds from the committed `bench/results/`.

The slow test runs `python -m bench --quick`: every benchmark end to end against its peers,
so none of them can rot. No timing is asserted: a quick run's figures mean nothing.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.__main__ import NAMES, STEPS

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "bench" / "results" / "quick"
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")


def envelope(
    benchmark: str,
    figures: dict[str, tuple[str, str, str | None, list[float]]],
    settings: dict[str, Any],
    *,
    commit: str,
    dirty: list[str] | None = None,
    quick: bool = False,
    complete: bool = True,
    runs: list[dict[str, Any]] | None = None,
    started: str = "2031-07-14T09:05:41+00:00",
    finished: str = "2031-07-14T09:17:23+00:00",
) -> dict[str, Any]:
    """A result file in the shape `bench.common.Recorder` writes."""
    git = {"commit": commit, "short": commit[:7], "dirty": bool(dirty), "dirty_paths": dirty or []}
    return {
        "schema": 1,
        "benchmark": benchmark,
        "quick": quick,
        "complete": complete,
        "started_at": started,
        "finished_at": finished if complete else None,
        "command": ["python", "-m", f"bench.{benchmark}", "--reps", "3"],
        "git": git,
        "git_at_end": git if complete else None,
        "machine": {
            "platform": "Linux-test",
            "start": {"cpus": 2, "cpus_usable": 2, "loadavg": [0.37, 0.41, 0.44]},
            "end": {"cpus": 2, "cpus_usable": 2, "loadavg": [1.73, 0.9, 0.6]} if complete else None,
        },
        "settings": settings,
        "versions": {"ours": {"arq": "0.28.0", "python": "3.11.7"}},
        "figures": {
            fid: {"label": label, "unit": unit, "better": better, "values": values}
            for fid, (label, unit, better, values) in figures.items()
        },
        "runs": runs or [],
    }


DRAIN = envelope(
    "drain",
    {
        "ours.jobs_per_s": ("ours: jobs/s", "jobs/s", "higher", [2533.1, 2505.2, 2551.7]),
        "arq-tuned.jobs_per_s": ("arq-tuned: jobs/s", "jobs/s", "higher", [2496.4, 2469.3, 2502.8]),
        "saq.jobs_per_s": ("saq: jobs/s", "jobs/s", "higher", [2405.6, 2301.9, 2474.2]),
        "ratio.ours_over_saq": ("ours/saq jobs/s", "x", "higher", [1.053, 0.983, 1.031]),
        "ratio.ours_over_arq_tuned": ("ours/arq-tuned jobs/s", "x", "higher", [1.015, 1.014, 1.02]),
    },
    {
        "jobs": 5000,
        "job": "one INCR",
        "steady_window_percent": [10, 90],
        "sides": {"ours": "WORKER_CONCURRENCY=100", "arq-tuned": "max_jobs=100", "saq": "c=100"},
    },
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
LATENCY = envelope(
    "latency",
    {
        "ours.p50_ms": ("ours: p50", "ms", "lower", [2.04, 1.53, 2.17]),
        "ours.p99_ms": ("ours: p99", "ms", "lower", [3.31, 2.72, 61.4]),
        "ours.idle_cpu_percent": ("ours: idle", "% of a core", "lower", [2.53, 2.41, 2.66]),
        "saq.p50_ms": ("saq: p50", "ms", "lower", [0.81, 0.74, 0.97]),
    },
    {"probes_per_rep": 40, "gap_ms": [50, 600], "sides": {"ours": "HTTP API", "saq": "enqueue"}},
    commit="f0e1d2c3b4a5968778695a4b3c2d1e0f98765432",
    dirty=["jobs/worker.py"],
    started="2031-07-15T13:44:02+00:00",
    finished="2031-07-15T13:51:38+00:00",
)
CRASH = envelope(
    "crash_recovery",
    {"ours.delay_s": ("ours: kill -9 to the next start", "s", "lower", [6.51, 7.02, 8.93, 5.64])},
    {
        "trials": 4,
        "ours": {
            "WORKER_LEASE_SECONDS": 7,
            "heartbeat_interval_s": 1.75,
            "dead_after_s": 5.6,
            "reaper_interval_s": 0.5,
        },
        "sides": {"ours": "WORKER_LEASE_SECONDS=7"},
    },
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
EXPORT = envelope(
    "export_memory",
    {
        "docs-10000.documents_per_s": (
            "10000 documents: documents/s",
            "documents/s",
            "higher",
            [489.2, 461.7, 511.3],
        ),
        "docs-10000.rss_growth_mib": (
            "10000 documents: RSS growth",
            "MiB",
            "lower",
            [28.6, 28.5, 28.7],
        ),
        "docs-100000.documents_per_s": (
            "100000 documents: documents/s",
            "documents/s",
            "higher",
            [359.4],
        ),
        "docs-100000.rss_growth_mib": ("100000 documents: RSS growth", "MiB", "lower", [39.3]),
        "docs-100000.vmhwm_growth_mib": (
            "100000 documents: VmHWM growth (kernel peak)",
            "MiB",
            "lower",
            [71.2],
        ),
    },
    {
        "format": "zip",
        "sizes": [10000, 100000],
        "target_mib": 64,
        "text_bytes": 2048,
        "rss_sample_interval_s": 0.05,
        "sides": {"docs-10000": "10000 documents", "docs-100000": "100000 documents"},
    },
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
    runs=[{"docs": n, "verified": {"ok": True}} for n in (10000, 10000, 10000, 100000)],
)
ANALYSIS = envelope(
    "analysis_throughput",
    {
        "ours.jobs_per_s": ("ours: jobs/s", "jobs/s", "higher", [108.4, 105.9, 109.1]),
        "celery-prefork.jobs_per_s": ("prefork: jobs/s", "jobs/s", "higher", [1.95, 1.94, 1.96]),
        "celery-gevent.jobs_per_s": ("gevent: jobs/s", "jobs/s", "higher", [47.3, 44.1, 49.8]),
        "ratio.ours_over_celery_prefork": (
            "ours/celery-prefork",
            "x",
            "higher",
            [55.6, 54.6, 55.7],
        ),
        "ratio.ours_over_celery_gevent": ("ours/celery-gevent", "x", "higher", [2.29, 2.4, 2.19]),
    },
    {
        "jobs": 200,
        "claude_delay_s": 1.0,
        "sides": {
            "ours": "WORKER_CONCURRENCY=200",
            "celery-prefork": "the recipe, prefork",
            "celery-gevent": "gevent, --concurrency=200",
        },
    },
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
HTTP = envelope(
    "http_enqueue",
    {
        "ours-w1.requests_per_s": (
            "ours-w1: requests/s",
            "requests/s",
            "higher",
            [3310.4, 3281.2, 3460.9],
        ),
        "bare-w1.requests_per_s": (
            "bare-w1: requests/s",
            "requests/s",
            "higher",
            [4173.5, 3996.1, 4194.8],
        ),
        "ratio.w1.ours_over_bare": (
            "ours/bare requests/s, uvicorn --workers 1",
            "x",
            "higher",
            [0.79, 0.82, 0.83],
        ),
        "ours.redis_round_trips": (
            "ours: Redis round trips per request",
            "round trips",
            "lower",
            [1.0],
        ),
        "bare.redis_round_trips": (
            "bare: Redis round trips per request",
            "round trips",
            "lower",
            [3.0],
        ),
    },
    {"connections": 64, "sides": {"ours-w1": "POST /v1/exports", "bare-w1": "bare enqueue_job"}},
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
for _side in ("ours", "bare"):  # counted once by design: a basis, not repetitions
    HTTP["figures"][f"{_side}.redis_round_trips"].update(basis="counted over 50 requests", digits=1)
FAIRNESS = envelope(
    "fairness",
    {
        "ours.b200.p50_wait_s": (
            "ours, backlog 200: quiet wait p50",
            "s",
            "lower",
            [0.21, 0.19, 0.24],
        ),
        "ours.b200.p99_wait_s": (
            "ours, backlog 200: quiet wait p99",
            "s",
            "lower",
            [0.93, 0.88, 1.12],
        ),
        "ours.b2000.p50_wait_s": (
            "ours, backlog 2000: quiet wait p50",
            "s",
            "lower",
            [0.33, 0.29, 0.41],
        ),
        "ours.b2000.p99_wait_s": (
            "ours, backlog 2000: quiet wait p99",
            "s",
            "lower",
            [1.41, 1.27, 1.83],
        ),
        "ours.p99_growth_s": (
            "ours: p99 wait at backlog 2000 minus at 200",
            "s",
            "lower",
            [0.48, 0.39, 0.71],
        ),
        "ours-fifo.b200.p99_wait_s": (
            "ours-fifo, backlog 200: quiet wait p99",
            "s",
            "lower",
            [4.12, 4.31, 4.05],
        ),
        "ours-fifo.b2000.p99_wait_s": (
            "ours-fifo, backlog 2000: quiet wait p99",
            "s",
            "lower",
            [41.7, 43.2, 40.9],
        ),
        "ours-fifo.p99_growth_s": ("ours-fifo: p99 growth", "s", "lower", [37.58, 38.89, 36.85]),
        "arq-tuned.b200.p99_wait_s": (
            "arq-tuned, backlog 200: quiet wait p99",
            "s",
            "lower",
            [4.02, 3.96, 4.11],
        ),
        "arq-tuned.b2000.p99_wait_s": (
            "arq-tuned, backlog 2000: quiet wait p99",
            "s",
            "lower",
            [40.3, 40.6, 39.8],
        ),
        "celery-gevent.b2000.p99_wait_s": (
            "celery, backlog 2000: quiet wait p99",
            "s",
            "lower",
            [52.4, 55.1, 51.7],
        ),
        "ours.b2000.claude_max_in_flight": ("ours: in flight", "calls", None, [50, 50, 50]),
        "ours-budget.percent_429": (
            "ours-budget: calls answered 429",
            "% of calls",
            "lower",
            [0.0, 0.33, 1.31],
        ),
        "ours-budget.rate_limit_attempts": (
            "ours-budget: attempts on rate limits",
            "attempts",
            "lower",
            [0, 0, 0],
        ),
        "ours-budget.dead_letters": ("ours-budget: dead letters", "jobs", "lower", [0, 0, 0]),
        "ours-budget.steady_calls_per_min": (
            "ours-budget: steady calls/min",
            "calls/min",
            "higher",
            [104.4, 103.2, 105.6],
        ),
        "ours-budget.limit_share": (
            "ours-budget: steady over the limit",
            "x",
            "higher",
            [0.87, 0.86, 0.88],
        ),
        "ours-no-budget.percent_429": (
            "ours-no-budget: calls answered 429",
            "% of calls",
            "lower",
            [58.3, 61.2, 57.9],
        ),
        "ours-no-budget.rate_limit_attempts": (
            "ours-no-budget: attempts on rate limits",
            "attempts",
            "lower",
            [412, 447, 398],
        ),
        "ours-no-budget.dead_letters": (
            "ours-no-budget: dead letters",
            "jobs",
            "lower",
            [61, 74, 58],
        ),
        "ours-no-budget.steady_calls_per_min": (
            "ours-no-budget: steady calls/min",
            "calls/min",
            "higher",
            [96.1, 91.4, 99.0],
        ),
    },
    {
        "claude_delay_s": 1.0,
        "backlogs": [200, 2000],
        "quiet_jobs": 20,
        "quiet_over_s": 10.0,
        "concurrency": 50,
        "budget": {
            "jobs": 300,
            "requests_per_minute": 120,
            "burst_requests": 10,
            "workers": 2,
            "steady_window_percent": [10, 90],
        },
        "sides": {
            "ours": "WORKER_CONCURRENCY=50, FAIR_SCHEDULING=true",
            "ours-fifo": "WORKER_CONCURRENCY=50, FAIR_SCHEDULING=false",
            "arq-tuned": "max_jobs=50, poll_delay=0.01",
            "celery-gevent": "--pool=gevent, --concurrency=50",
            "ours-budget": "CLAUDE_BUDGET=true",
            "ours-no-budget": "CLAUDE_BUDGET=false",
        },
    },
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
# The digits `bench/fairness.py` declares: waits, growth, percentages and shares to two
# places, calls a minute to one, counts to none.
FAIRNESS_DIGITS = (
    ("_wait_s", 2),
    ("_growth_s", 2),
    ("percent_429", 2),
    ("limit_share", 2),
    ("calls_per_min", 1),
    ("", 0),
)
for _fid, _entry in FAIRNESS["figures"].items():
    _entry["digits"] = next(d for suffix, d in FAIRNESS_DIGITS if _fid.endswith(suffix))
SCALE = envelope(
    "scale",
    {
        "ours-w1.jobs_per_s": ("ours-w1: jobs/s", "jobs/s", "higher", [2210.4, 2187.9, 2251.3]),
        "ours-w4.jobs_per_s": ("ours-w4: jobs/s", "jobs/s", "higher", [3105.2, 2988.6, 3177.4]),
        "ours-w4.redis_cpu_us_per_job": ("ours-w4: Redis CPU", "us", "lower", [41.3, 44.8, 39.9]),
        "ours-w4.redis_commands_per_job": ("ours-w4: commands", "commands", "lower", [61.2] * 3),
        "ours-w4.ceiling_jobs_per_s": (
            "ours-w4: ceiling",
            "jobs/s",
            "higher",
            [24213, 22321, 25062],
        ),
        "saq-w4.redis_cpu_us_per_job": ("saq-w4: Redis CPU", "us", "lower", [18.4, 19.1, 18.2]),
        "saq-w4.redis_commands_per_job": ("saq-w4: commands", "commands", "lower", [19.3] * 3),
        "saq-w4.ceiling_jobs_per_s": ("saq-w4: ceiling", "jobs/s", "higher", [54347, 52356, 54945]),
        "http-w1.requests_per_s": (
            "http-w1: requests/s",
            "requests/s",
            "higher",
            [3021, 2954, 3102],
        ),
        "http-w4.requests_per_s": (
            "http-w4: requests/s",
            "requests/s",
            "higher",
            [4410, 4376, 4518],
        ),
        "http-wait-w4.requests_per_s": (
            "wait: requests/s",
            "requests/s",
            "higher",
            [3807, 3711, 3902],
        ),
        "ours-api.redis_cpu_us_per_job": ("ours-api: Redis CPU", "us", "lower", [52.7, 55.1, 50.2]),
        "ours-api.ceiling_jobs_per_s": (
            "ours-api: ceiling",
            "jobs/s",
            "higher",
            [18975, 18149, 19920],
        ),
        "ours-api-wait.ceiling_jobs_per_s": (
            "wait: ceiling",
            "jobs/s",
            "higher",
            [14104, 13587, 14641],
        ),
        "ratio.w4.wait_over_plain": ("wait/plain", "x", "higher", [0.86, 0.85, 0.86]),
    },
    {
        "jobs": 3000,
        "job": "one INCR",
        "wrk": "-t1 -c64, 5 s after a 1 s warm-up",
        "sides": {
            "ours-w1": "1 worker process",
            "ours-w4": "4 worker processes",
            "saq-w4": "4 worker processes, concurrency=100",
            "http-w1": "uvicorn --workers 1",
            "http-w4": "uvicorn --workers 4",
            "http-wait-w4": "uvicorn --workers 4, REDIS_MIN_REPLICAS=1",
        },
        "api_paths": {"ours-api": ["http-w4", "ours-w4"]},
    },
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
UNREGISTERED = envelope(
    "fairness_probe",
    {"tenant-a.share": ("tenant a: share of slots", "%", None, [48.2, 51.7, 50.3])},
    {"tenants": 2},
    commit="a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
)
FIXTURE = {
    "http_enqueue": HTTP,
    "drain": DRAIN,
    "latency": LATENCY,
    "crash_recovery": CRASH,
    "export_memory": EXPORT,
    "analysis_throughput": ANALYSIS,
    "fairness": FAIRNESS,
    "scale": SCALE,
    "fairness_probe": UNREGISTERED,
}


def write_results(directory: Path, files: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / f"{name}.json").write_text(json.dumps(data, indent=2))
    return directory


@pytest.fixture
def built(tmp_path: Path) -> str:
    results = write_results(tmp_path / "results", FIXTURE)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "2031-07-16.md").write_text("# Notes\n\nThe drain is bound by one event loop.\n")
    return report.build(results, tmp_path, notes=notes).markdown


def section_of(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title} (")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


# ---------------------------------------------------------------------- figures


def test_a_figure_is_its_median_with_min_max(built: str):
    # 2533.1, 2505.2, 2551.7 -> median 2533.1, shown to whole jobs/s
    assert "full job layer: 2533 [2505-2552]" in built
    assert "| ours | WORKER_CONCURRENCY=100 | 2533 [2505-2552] |" in built


def test_a_figure_with_fewer_than_three_repetitions_says_how_many(built: str):
    export = section_of(built, "Export memory")
    assert "359 (1 repetition)" in export
    assert "39.3 (1 repetition)" in export


def test_an_even_number_of_repetitions_gives_the_mean_of_the_middle_two(built: str):
    crash = section_of(built, "Crash recovery")
    assert f"{statistics.median([6.51, 7.02, 8.93, 5.64]):.2f} [5.64-8.93]" in crash


# ---------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("values", "op", "threshold", "outcome"),
    [
        ([1.05, 1.01, 1.08], ">", 1.0, "met"),  # the worst (lowest) clears it
        ([1.05, 0.98, 1.03], ">", 1.0, "within noise"),  # only the median does
        ([0.95, 0.91, 1.02], ">", 1.0, "missed"),
        ([3.3, 2.7, 3.7], "<", 50, "met"),  # the worst (highest) clears it
        ([3.3, 2.7, 61.0], "<", 50, "within noise"),
        ([52.0, 49.0, 61.0], "<", 50, "missed"),
        ([39.3], "<", 64, "met"),
    ],
)
def test_a_target_is_met_only_when_its_worst_repetition_clears_it(
    values: list[float], op: str, threshold: float, outcome: str
):
    stat = report.Stat("x", "", None, tuple(values))
    assert report.judge(stat, op, threshold) == outcome


def test_the_report_judges_each_target_by_the_rule(built: str):
    drain = section_of(built, "Worker drain rate")
    assert (
        "ahead of SAQ: ours/saq jobs/s 1.03 [0.98-1.05], "
        "worst repetition 0.98 > 1: **within noise**" in drain
    )
    assert "worst repetition 1.01 >= 0.95: **met**" in drain
    latency = section_of(built, "Enqueue-to-start latency")
    assert "worst repetition 2.17 < 15: **met**" in latency
    assert "worst repetition 61.40 < 50: **within noise**" in latency
    assert "worst repetition 2.66 < 2: **missed**" in latency
    summary = built.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert (
        "| **within noise**: ahead of SAQ (within noise); no cost to throughput: the drain with "
        "fair scheduling on, close to raw arq tuned in the same run (met) |" in summary
    )
    assert "**missed**: p50 latency via the HTTP API (met)" in summary


def test_a_threshold_can_be_another_figure_of_the_same_run(built: str):
    http = section_of(built, "HTTP enqueue rate")
    # bare enqueue_job's counted round trips (3) are the bound for ours (1).
    assert (
        "ours: Redis round trips per request 1.0 (counted over 50 requests), "
        "worst repetition 1.0 < 3: **met**"
    ) in http
    assert "uvicorn --workers 1 0.82 [0.79-0.83], worst repetition 0.79 >= 1: **missed**" in http
    # The run had no two-worker configuration: that target is not measured, not met.
    assert "the bare endpoint's rate, two uvicorn workers: **not measured**" in http


def test_the_crash_bound_comes_from_the_lease_the_run_used(built: str):
    # WORKER_LEASE_SECONDS=7 in the JSON: the bound is 7 + 2, not the default's 12.
    assert "worst repetition 8.93 < 9: **met**" in section_of(built, "Crash recovery")


def test_the_export_target_is_judged_on_the_sampled_rss_growth_not_vmhwm(built: str):
    export = section_of(built, "Export memory")
    # VmHWM growth (71.2 MiB) is over the budget; the sampled RSS growth (39.3) is not.
    assert (
        "RSS growth at the largest size under the memory budget: 100000 documents: RSS growth "
        "39.3 (1 repetition), worst repetition 39.3 < 64: **met**" in export
    )
    assert "71.2 (1 repetition)" in export and "VmHWM growth MiB (kernel peak)" in export


def test_both_celery_ratios_are_quoted(built: str):
    summary = built.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert (
        "the Celery recipe (the recipe, prefork): 1.95 [1.94-1.96] jobs/s, ours/it 55.6 [54.6-55.7]"
        in summary
    )
    assert (
        "Celery's gevent pool (gevent, --concurrency=200): 47.3 [44.1-49.8] jobs/s, "
        "ours/it 2.29 [2.19-2.40]" in summary
    )


def test_the_fairness_section_shows_every_side_at_every_backlog(built: str):
    fairness = section_of(built, "Fairness between accounts and the shared Claude budget")
    assert (
        "| side | settings | backlog 200: p50 s | backlog 200: p99 s | backlog 2000: p50 s "
        "| backlog 2000: p99 s | p99 growth s (largest backlog minus smallest) |" in fairness
    )
    assert (
        "| ours | WORKER_CONCURRENCY=50, FAIR_SCHEDULING=true | 0.21 [0.19-0.24] "
        "| 0.93 [0.88-1.12] | 0.33 [0.29-0.41] | 1.41 [1.27-1.83] | 0.48 [0.39-0.71] |"
    ) in fairness
    assert (
        "| celery-gevent | --pool=gevent, --concurrency=50 | - | - | - | 52.40 [51.70-55.10] | - |"
        in (fairness)
    )
    assert "| ours-no-budget | CLAUDE_BUDGET=false | 58.30 [57.90-61.20] |" in fairness
    summary = built.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert (
        "ours with FAIR_SCHEDULING=false: backlog 200: 4.12 [4.05-4.31] s; "
        "backlog 2000: 41.70 [40.90-43.20] s" in summary
    )


def test_the_fairness_targets_are_judged_on_the_worst_repetition(built: str):
    fairness = section_of(built, "Fairness between accounts and the shared Claude budget")
    verdicts = fairness.split("Targets (", 1)[1]
    assert "beside a backlog of 200: ours, backlog 200: quiet wait p99 0.93 [0.88-1.12], " in (
        verdicts
    )
    assert "worst repetition 1.12 < 2: **met**" in verdicts
    assert "worst repetition 1.83 < 2: **met**" in verdicts
    # The growth's bound is one Claude call of the run (the fake's delay in its settings).
    assert "worst repetition 0.71 < 1: **met**" in verdicts
    assert "worst repetition 1.31 < 1: **within noise**" in verdicts  # 429s
    assert "worst repetition 0 <= 0: **met**" in verdicts  # dead letters
    assert "worst repetition 0.86 >= 0.9: **missed**" in verdicts  # steady share of the limit
    summary = built.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "| **missed**: the quiet account's p99 wait beside a backlog of 200 (met);" in summary


def test_the_fairness_growth_bound_comes_from_the_run_s_claude_delay(tmp_path: Path):
    slow = json.loads(json.dumps(FAIRNESS))
    slow["settings"]["claude_delay_s"] = 0.4
    files = write_results(tmp_path / "r", {"fairness": slow})
    markdown = report.build(files, tmp_path).markdown
    assert "worst repetition 0.71 < 0.4: **missed**" in markdown


def test_the_fairness_chart_has_the_waits_and_the_budget(tmp_path: Path):
    files = write_results(tmp_path / "r", {"fairness": FAIRNESS})
    ((name, _title, panels, _view),) = report.build(files, tmp_path).charts
    assert name == "fairness"
    waits, rate, limited = panels
    assert "ours.b2000.p99_wait_s" in waits.figures and waits.log_scale and waits.line == 2.0
    assert "celery-gevent.b2000.p99_wait_s" in waits.figures
    assert rate.figures == (
        "ours-budget.steady_calls_per_min",
        "ours-no-budget.steady_calls_per_min",
    )
    assert rate.line == 120.0
    assert limited.figures == ("ours-budget.percent_429", "ours-no-budget.percent_429")


def test_the_scale_section_shows_each_worker_count_and_the_projected_ceilings(built: str):
    scale = section_of(built, "How far one Redis carries")
    assert "| ours-w4 | 4 worker processes | 3105 [2989-3177] | 61.2 [61.2-61.2] |" in scale
    assert "| saq-w4 | 4 worker processes, concurrency=100 | - | 19.3 [19.3-19.3] | 18.4" in scale
    # The production path: the API's POST at the most uvicorn workers plus our drain.
    assert (
        "(`http-w4` per request plus `ours-w4`'s drain per job): 52.7 [50.2-55.1] us of Redis "
        "CPU per job, ceiling 18975 [18149-19920] jobs/s" in scale
    )
    # ours-api-wait has its figure but no path in the settings: not shown as a path.
    assert "14104" not in scale
    assert "uvicorn --workers 4: 0.86 [0.85-0.86]" in scale
    summary = built.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "drain jobs/s by worker processes (1: 2210 [2188-2251], 4: 3105 [2989-3177])" in (
        summary
    )
    assert "saq-w4: 18.4 [18.2-19.1] us and 19.3 [19.3-19.3] Redis commands per job" in summary


def test_a_quick_run_is_shown_but_never_judged(tmp_path: Path):
    quick = {**DRAIN, "quick": True}
    markdown = report.build(write_results(tmp_path / "r", {"drain": quick}), tmp_path).markdown
    assert "**Quick run**" in markdown
    body = markdown.split("## Runs", 1)[1]  # the header explains the outcomes
    for outcome in report.OUTCOMES:
        assert f"**{outcome}**" not in body
    assert "**not judged (quick run)**" in body


def test_an_incomplete_run_says_so(tmp_path: Path):
    cut = envelope("drain", {k: (v["label"], v["unit"], v["better"], v["values"][:2])
                             for k, v in DRAIN["figures"].items()},
                   DRAIN["settings"], commit="1" * 40, complete=False)  # fmt: skip
    markdown = report.build(write_results(tmp_path / "r", {"drain": cut}), tmp_path).markdown
    assert "**Incomplete**" in markdown and "(incomplete run)" in markdown
    assert "[2505-2533] (2 repetitions)" in markdown


# ---------------------------------------------------------------------- provenance


def test_each_section_names_its_own_commit_and_tree(built: str):
    assert "commit `a1b2c3d` (clean tree)" in section_of(built, "Worker drain rate")
    latency = section_of(built, "Enqueue-to-start latency")
    assert "commit `f0e1d2c` (uncommitted changes: `jobs/worker.py`)" in latency
    assert "from 2031-07-15 13:44 to 2031-07-15 13:51 UTC" in latency
    assert "load average of 0.37 at the start and 1.73 at the end" in latency
    assert "The sections ran at different commits" in built
    # No single commit is claimed for the whole report.
    header = built.split("## Runs", 1)[0]
    assert "a1b2c3d" not in header and "f0e1d2c" not in header


def test_a_file_nobody_registered_still_gets_its_figures(built: str):
    assert "| tenant a: share of slots | 50.3 [48.2-51.7] | % |" in built


def test_a_registered_section_without_results_says_not_measured(built: str):
    missing = "| Webhook deliveries | not measured: no result file `webhook_throughput.json` |"
    assert missing in built


def test_notes_are_linked_not_pasted(built: str):
    assert "[2031-07-16.md](notes/2031-07-16.md)" in built
    assert "bound by one event loop" not in built


def test_no_number_in_the_report_that_the_json_does_not_hold(built: str):
    allowed = allowed_numbers(FIXTURE)
    stray = [t for t in NUMBER.findall(LINK.sub("", built)) if not _known(t, allowed)]
    assert not stray, f"numbers in the report that no JSON holds: {sorted(set(stray))}"


def test_the_report_is_rebuilt_byte_for_byte(tmp_path: Path):
    results = write_results(tmp_path / "results", FIXTURE)
    assert report.build(results, tmp_path).markdown == report.build(results, tmp_path).markdown


# ---------------------------------------------------------------------- committed files


def test_the_committed_results_md_is_what_the_committed_json_builds():
    built = report.build(report.RESULTS, ROOT / "bench")
    assert (ROOT / "bench" / "RESULTS.md").read_text() == built.markdown, (
        "bench/RESULTS.md differs from its JSON: run `python -m bench.report`"
    )
    readme = report.README.read_text()
    block = report.readme_block(built, ROOT / "bench" / "RESULTS.md", report.README)
    assert block in readme, "the README's benchmark table differs: run `python -m bench.report`"


def test_the_committed_report_holds_no_number_the_committed_json_does_not():
    files = report.load(report.RESULTS)
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    allowed = allowed_numbers(files)
    stray = [t for t in NUMBER.findall(LINK.sub("", text)) if not _known(t, allowed)]
    assert not stray, f"numbers in RESULTS.md that no JSON holds: {sorted(set(stray))}"


def test_numbers_in_the_notes_cite_the_json_they_come_from():
    for path in sorted(report.NOTES.glob("*.md")):
        for number, line in enumerate(path.read_text().splitlines()[1:], start=2):
            prose = re.sub(r"`[^`]*`", "", LINK.sub("", line))
            if NUMBER.search(prose):
                assert re.search(r"results/\w+\.json", line), f"{path.name}:{number}: {line}"


def test_every_benchmark_step_has_a_registered_section():
    sections = report.sections()
    assert set(NAMES) <= set(sections)
    for name, section in sections.items():
        assert section.name == name and section.title and section.source.startswith("bench/")


def test_the_full_run_repeats_every_benchmark_at_least_three_times():
    for step in STEPS:
        flag = "--trials" if "--trials" in step.full else "--reps"
        assert int(step.full[step.full.index(flag) + 1]) >= 3, step.name


# ---------------------------------------------------------------------- helpers


def allowed_numbers(files: dict[str, dict[str, Any]]) -> set[float]:
    """Every number a JSON file holds (in values, keys and strings, and list lengths), each
    figure's median, and the thresholds the registered targets resolve to from it."""
    found: set[float] = set()

    def walk(node: Any) -> None:
        if isinstance(node, bool):
            return
        if isinstance(node, int | float):
            found.add(float(node))
        elif isinstance(node, str):  # an ISO time's "T" must not hide the hour
            found.update(float(t) for t in NUMBER.findall(re.sub(r"(?<=\d)T(?=\d)", " ", node)))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            found.add(float(len(node)))
            for value in node:
                walk(value)

    sections = report.sections()
    for name, data in files.items():
        walk(data)
        for entry in data["figures"].values():
            if entry["values"]:
                found.add(statistics.median(entry["values"]))
        section = sections.get(name)
        if section is not None:
            view = report.View(name, data)
            for target in section.targets_for(view):
                threshold = target.resolve(data)
                if threshold is not None:
                    found.add(threshold)
    return found


def _known(token: str, allowed: set[float]) -> bool:
    places = len(token.split(".", 1)[1]) if "." in token else 0
    shown = f"{float(token):.{places}f}"
    return any(f"{value:.{places}f}" == shown for value in allowed)


# ---------------------------------------------------------------------- the quick run


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_bench_runs_every_benchmark_and_writes_the_report():
    # It installs what it lacks first (the bench extra, the Celery virtualenv, wrk).
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runlog = json.loads((QUICK / "runlog.json").read_text())
    assert {name: step["exit"] for name, step in runlog.items()} == dict.fromkeys(NAMES, 0)
    for name in NAMES:
        data = json.loads((QUICK / f"{name}.json").read_text())
        assert data["quick"] is True and data["complete"] is True
        assert data["git"]["commit"] and data["machine"]["end"]["loadavg"]
        assert all(entry["values"] for entry in data["figures"].values()), name
    markdown = (QUICK / "RESULTS.md").read_text()
    assert "QUICK RUN" in markdown and "not measured" not in markdown
    body = markdown.split("## Runs", 1)[1]
    assert "**met**" not in body and "**missed**" not in body
    charts = re.findall(r"!\[[^\]]*\]\((charts/[a-z_]+\.png)\)", markdown)
    assert len(charts) == len(NAMES)
    for chart in charts:
        assert (QUICK / chart).read_bytes().startswith(b"\x89PNG")
