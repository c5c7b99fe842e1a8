"""The tracing-cost section: `bench/otel_cost.py`'s `results/otel_cost.json`."""

from __future__ import annotations

from bench.report import Panel, Section, SummaryRow, Target, View, table

SIDES = ("before", "off", "on")


def summary(view: View) -> SummaryRow:
    return SummaryRow(
        "what tracing costs, drain jobs/s and enqueue requests/s, off / before tracing existed",
        f"drain {view.fmt('ratio.drain.off_over_before', 3)}x, "
        f"HTTP {view.fmt('ratio.http.off_over_before', 3)}x; exporting every span: drain "
        f"{view.fmt('ratio.drain.on_over_off', 3)}x, HTTP {view.fmt('ratio.http.on_over_off', 3)}x "
        "of off",
    )


def body(view: View) -> list[str]:
    sides: dict[str, str] = view.settings.get("sides") or {}
    commits: dict[str, str] = view.settings.get("commits") or {}
    rows = [
        [
            side,
            sides.get(side, ""),
            (commits.get(side) or "")[:7],
            view.fmt(f"{side}.drain_jobs_per_s"),
            view.fmt(f"{side}.drain_cpu_ms_per_job", 3),
            view.fmt(f"{side}.http_requests_per_s"),
            view.fmt(f"{side}.http_p99_ms", 1),
            view.fmt(f"{side}.http_cpu_ms_per_request", 3),
        ]
        for side in SIDES
        if view.has(f"{side}.drain_jobs_per_s")
    ]
    s = view.settings
    lines = table(
        ["side", "what", "commit", "drain jobs/s", "worker CPU ms/job", "requests/s",
         "p99 ms", "API CPU ms/request"],
        rows,
    )  # fmt: skip
    lines += [
        "",
        f"The drain: {s.get('jobs', '?')} trivial jobs queued before ONE worker process starts "
        f"(concurrency {s.get('worker_concurrency', '?')}). The HTTP enqueue: `POST /v1/exports` "
        f"at {s.get('connections', '?')} connections with wrk for {s.get('seconds', '?')} s, one "
        "uvicorn worker. Each side runs from its own checkout of its commit with the same "
        "virtualenv, so the sides differ only by the tracing change. `on` exports every span "
        "over OTLP/HTTP to a sink that answers at once.",
        "",
        "Ratios within each repetition: drain off/before "
        f"{view.fmt('ratio.drain.off_over_before', 3)}, HTTP off/before "
        f"{view.fmt('ratio.http.off_over_before', 3)}; drain on/off "
        f"{view.fmt('ratio.drain.on_over_off', 3)}, HTTP on/off "
        f"{view.fmt('ratio.http.on_over_off', 3)}.",
    ]
    if view.has("before.calls_per_request"):
        lines += ["", *calls(view)]
    return lines


def calls(view: View) -> list[str]:
    """The Python calls each side makes per enqueueing POST and per job of the drain."""
    s = view.settings
    ratio = view.fmt("ratio.calls_per_request.off_over_before", 4)
    rows = [
        [
            side,
            view.fmt(f"{side}.calls_per_request", 0),
            view.fmt(f"{side}.tracing_calls_per_request", 1),
            view.fmt(f"{side}.calls_per_job", 0),
            view.fmt(f"{side}.tracing_calls_per_job", 1),
        ]
        for side in SIDES
    ]
    return [
        "Python calls, counted with cProfile (what a throughput ratio on a small shared "
        "machine cannot tell from noise):",
        "",
        *table(
            [
                "side",
                "calls per POST",
                "of them into tracing",
                "calls per job",
                "of them into tracing",
            ],
            rows,
        ),
        "",
        f"Per POST: the app in-process over httpx's ASGI transport, {s.get('call_requests', '?')} "
        "enqueueing POSTs after a warm-up; the request path does the same work every time, "
        f"so its count hardly moves from run to run (off/before {ratio}). "
        "Per job: the worker under the arq CLI, the slope between a drain of "
        f"{s.get('call_jobs', '?')} jobs and one of three times as many. The total moves by "
        "a few percent between runs with the number of polls and the size of each claim (how "
        "many slots were free when it ran); the calls into the tracing modules "
        "(`jobs/tracing/`, `api/tracing.py`) do not: off, every one of them returns at its "
        "first test.",
    ]


def charts(view: View) -> list[Panel]:
    return [
        Panel("drain jobs/s", tuple(f"{side}.drain_jobs_per_s" for side in SIDES)),
        Panel("requests/s", tuple(f"{side}.http_requests_per_s" for side in SIDES)),
    ]


SECTION = Section(
    name="otel_cost",
    title="What tracing costs",
    source="bench/otel_cost.py",
    order=85,
    summary=summary,
    body=body,
    targets=(
        Target("ratio.drain.off_over_before", ">=", 0.95, "tracing off costs the drain nothing"),
        Target("ratio.http.off_over_before", ">=", 0.95, "tracing off costs the enqueue nothing"),
        Target(
            "ratio.calls_per_request.off_over_before",
            "<=",
            1.0,
            "tracing off adds no Python call to an enqueueing POST",
        ),
    ),
    charts=charts,
)
