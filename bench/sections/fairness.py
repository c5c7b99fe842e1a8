"""The fairness section: `bench/fairness.py`'s `results/fairness.json`.

Two parts. The noisy neighbour: a quiet account's wait (its POST or enqueue to the moment
the fake Messages API receives its call) beside a noisy account's backlog, for ours with
fair scheduling on and off, raw arq tuned and the Celery recipe in its gevent pool, all at
the same concurrency toward Claude; the targets are on ours with fair scheduling on. The
shared budget: two worker processes against the fake's rate limit, with the shared Claude
budget on and off; the targets are on the run with it on. That fairness costs no
throughput is the drain section's target (the drain runs with fair scheduling on, its
default), not measured again here.
"""

from __future__ import annotations

from typing import Any

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import side_table

NOISY = ("ours", "ours-fifo", "arq-tuned", "celery-gevent")
PEERS = (
    ("ours-fifo", "ours with FAIR_SCHEDULING=false"),
    ("arq-tuned", "raw arq tuned"),
    ("celery-gevent", "the Celery recipe's task, gevent pool"),
)
BUDGET = ("ours-budget", "ours-no-budget")
P99_WAIT_LIMIT_S = 2.0  # issue 12: the quiet account's p99 wait under two seconds
RATE_LIMITED_LIMIT_PERCENT = 1.0  # under one call in a hundred answered 429
LIMIT_SHARE = 0.9  # at least nine tenths of the limit, over the steady part


def _backlogs(view: View) -> list[int]:
    return sorted(int(n) for n in view.settings.get("backlogs") or [])


def _budget(view: View) -> dict[str, Any]:
    return view.settings.get("budget") or {}


def one_call(data: dict[str, Any]) -> float | None:
    """The bound on the p99's growth: the time of one Claude call in the run (the fake's)."""
    return float(data["settings"]["claude_delay_s"])


def targets(view: View) -> tuple[Target, ...]:
    backlogs = _backlogs(view)
    found = [
        Target(
            f"ours.b{n}.p99_wait_s",
            "<",
            P99_WAIT_LIMIT_S,
            f"the quiet account's p99 wait beside a backlog of {n}",
        )
        for n in backlogs
    ]
    if len(backlogs) > 1:
        found.append(
            Target(
                "ours.p99_growth_s",
                "<",
                one_call,
                "about the same p99 wait at the largest backlog as at the smallest (more by "
                "less than one Claude call's time)",
            )
        )
    found += [
        Target(
            "ours-budget.percent_429",
            "<",
            RATE_LIMITED_LIMIT_PERCENT,
            "shared budget: few calls answered rate-limited",
        ),
        Target("ours-budget.dead_letters", "<=", 0, "shared budget: no dead letters"),
        Target(
            "ours-budget.limit_share",
            ">=",
            LIMIT_SHARE,
            "shared budget: steady throughput near the limit",
        ),
    ]
    return tuple(found)


def _waits(view: View, side: str) -> str:
    return "; ".join(
        f"backlog {n}: {view.fmt(f'{side}.b{n}.p99_wait_s')} s"
        for n in _backlogs(view)
        if view.has(f"{side}.b{n}.p99_wait_s")
    )


def summary(view: View) -> SummaryRow:
    s = view.settings
    budget = _budget(view)
    backlogs = " and ".join(str(n) for n in _backlogs(view))
    ours = f"quiet account's p99 wait, fair scheduling: {_waits(view, 'ours')}"
    if view.has("ours-budget.limit_share"):
        ours += (
            f"; shared budget: {view.fmt('ours-budget.steady_calls_per_min')} calls/min "
            f"steady ({view.fmt('ours-budget.limit_share')} of the limit), "
            f"{view.fmt('ours-budget.percent_429')}% answered rate-limited, "
            f"{view.fmt('ours-budget.dead_letters')} dead letters"
        )
    peers = [f"{what}: {_waits(view, side)}" for side, what in PEERS if _waits(view, side)]
    if view.has("ours-no-budget.percent_429"):
        peers.append(
            f"without the budget: {view.fmt('ours-no-budget.percent_429')}% answered "
            f"rate-limited, {view.fmt('ours-no-budget.rate_limit_attempts')} attempts spent on "
            f"rate limits, {view.fmt('ours-no-budget.dead_letters')} dead letters"
        )
    return SummaryRow(
        f"fairness: a quiet account's {s.get('quiet_jobs', '?')} analyses beside a noisy "
        f"backlog of {backlogs or '?'}, one worker process per side at "
        f"{s.get('concurrency', '?')} Claude calls at once; one Claude budget for "
        f"{budget.get('workers', '?')} workers at {budget.get('requests_per_minute', '?')} "
        "requests/min",
        ours,
        "; ".join(peers),
    )


def body(view: View) -> list[str]:
    s = view.settings
    budget = _budget(view)
    backlogs = _backlogs(view)
    columns: list[tuple[str, str, int | None]] = []
    for n in backlogs:
        columns += [
            (f"backlog {n}: p50 s", f"b{n}.p50_wait_s", 2),
            (f"backlog {n}: p99 s", f"b{n}.p99_wait_s", 2),
        ]
    if len(backlogs) > 1:
        columns.append(("p99 growth s (largest backlog minus smallest)", "p99_growth_s", 2))
    lines = ["### A quiet account beside a noisy one", "", *side_table(view, columns)]
    in_flight = [
        f"{side} {view.fmt(f'{side}.b{n}.claude_max_in_flight', 0)} (backlog {n})"
        for side in NOISY
        for n in backlogs
        if view.has(f"{side}.b{n}.claude_max_in_flight")
    ]
    lines += [
        "",
        f"Account A (noisy) enqueues its backlog at once; right after, account B (quiet) "
        f"enqueues {s.get('quiet_jobs', '?')} analyses spread evenly over "
        f"{s.get('quiet_over_s', '?')} s. The fake Messages API answers every call in "
        f"{s.get('claude_delay_s', '?')} s. Every side is ONE worker process with "
        f"{s.get('concurrency', '?')} Claude calls at once. B's wait is the time the fake "
        "received B's call (each call matched to its job by a token in the document's text) "
        "minus the time just before B's POST (ours) or enqueue call (the peers); a side stops "
        "once every B call arrived, whatever is left of A's backlog. Each side starts on a "
        "flushed Redis after a warm-up job.",
    ]
    if in_flight:
        lines += ["", "Claude calls in flight at most: " + "; ".join(in_flight) + "."]
    lines += [
        "",
        "### One Claude budget for every worker",
        "",
        *side_table(
            view,
            [
                ("answered rate-limited, % of calls", "percent_429", 2),
                ("answered rate-limited", "answered_429", 0),
                ("calls received", "calls", 0),
                ("attempts spent on rate limits", "rate_limit_attempts", 0),
                ("dead letters", "dead_letters", 0),
                ("calls admitted a minute, steady part", "steady_calls_per_min", 1),
                ("share of the limit", "limit_share", 2),
                ("wall s (start-up included)", "wall_s", None),
            ],
        ),
    ]
    window = budget.get("steady_window_percent") or ["?", "?"]
    lines += [
        "",
        f"The fake allows {budget.get('requests_per_minute', '?')} requests a minute, a "
        f"bucket of {budget.get('burst_requests', '?')}. {budget.get('jobs', '?')} analyses "
        f"are queued, then {budget.get('workers', '?')} worker processes start together; the "
        "run ends when every job has ended. Attempts spent on rate limits are the attempts "
        "whose recorded error is Claude's rate limit, from the job records' attempt "
        "histories (a job handed back to wait for the budget spends none). The steady part "
        f"runs from the {window[0]}% mark of the calls the fake admitted (never before the "
        f"call after the opening bucket) to the {window[1]}% mark; its calls a minute are "
        "also shown over the limit.",
        "",
        "That fair scheduling costs no throughput is judged in the drain section: the drain "
        "runs with fair scheduling on, its default, beside raw arq tuned in the same run.",
    ]
    return lines


def charts(view: View) -> list[Panel]:
    backlogs = _backlogs(view)
    rpm = _budget(view).get("requests_per_minute")
    return [
        Panel(
            "quiet account's p99 wait, s (log)",
            tuple(f"{side}.b{n}.p99_wait_s" for side in NOISY for n in backlogs),
            log_scale=True,
            line=P99_WAIT_LIMIT_S,
        ),
        Panel(
            "calls admitted a minute, steady part",
            tuple(f"{side}.steady_calls_per_min" for side in BUDGET),
            line=float(rpm) if rpm else None,
        ),
        Panel(
            "answered rate-limited, % of calls",
            tuple(f"{side}.percent_429" for side in BUDGET),
            line=RATE_LIMITED_LIMIT_PERCENT,
        ),
    ]


SECTION = Section(
    name="fairness",
    title="Fairness between accounts and the shared Claude budget",
    source="bench/fairness.py",
    order=80,
    summary=summary,
    body=body,
    targets=targets,
    charts=charts,
)
