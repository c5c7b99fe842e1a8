"""The HTTP enqueue section: `bench/http_enqueue.py`'s `results/http_enqueue.json`."""

from __future__ import annotations

from typing import Any

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import side_table


def _workers(view: View) -> list[int]:
    found = set()
    for side in view.settings.get("sides") or {}:
        found.add(int(side.rsplit("-w", 1)[1]))
    return sorted(found)


def summary(view: View) -> SummaryRow:
    def cells(side: str) -> str:
        return "; ".join(
            f"uvicorn --workers {w}: {view.fmt(f'{side}-w{w}.requests_per_s')} requests/s, "
            f"p99 {view.fmt(f'{side}-w{w}.p99_ms')} ms"
            for w in _workers(view)
            if view.has(f"{side}-w{w}.requests_per_s")
        )

    ours = f"`POST /v1/exports` (auth, record, idempotency): {cells('ours')}"
    if view.has("ours.redis_round_trips"):
        ours += f"; Redis round trips per request {view.fmt('ours.redis_round_trips')}"
    peers = f"bare FastAPI + `enqueue_job`: {cells('bare')}"
    if view.has("bare.redis_round_trips"):
        peers += f"; Redis round trips per request {view.fmt('bare.redis_round_trips')}"
    return SummaryRow(
        f"HTTP enqueue rate and p99 at {view.settings.get('connections', '?')} connections (wrk)",
        ours,
        peers,
    )


def body(view: View) -> list[str]:
    lines = side_table(
        view,
        [
            ("requests/s", "requests_per_s", None),
            ("p50 ms", "p50_ms", None),
            ("p99 ms", "p99_ms", None),
            ("Redis commands/request", "redis_commands_per_request", None),
        ],
    )
    ratios = [
        f"uvicorn --workers {w}: {view.fmt(f'ratio.w{w}.ours_over_bare')}"
        for w in _workers(view)
        if view.has(f"ratio.w{w}.ours_over_bare")
    ]
    s = view.settings
    lines += [
        "",
        f"wrk {s.get('wrk', '?')}, {s.get('seconds', '?')} s per run after a "
        f"{s.get('warmup_s', '?')} s warm-up, `uvicorn --no-access-log`; {s.get('api', '')}.",
    ]
    if ratios:
        lines += ["", "Ours/bare requests/s within each repetition: " + "; ".join(ratios) + "."]
    trips = [
        f"{label} {view.fmt(figure)}"
        for label, figure in (
            ("ours", "ours.redis_round_trips"),
            ("an idempotent replay of ours", "ours-replay.redis_round_trips"),
            ("bare `enqueue_job`", "bare.redis_round_trips"),
        )
        if view.has(figure)
    ]
    if trips:
        lines += [
            "",
            "Redis round trips per request (every write to a Redis connection): "
            + "; ".join(trips)
            + ".",
        ]
    if view.has("other_cpu_s"):
        lines += ["", f"CPU seconds other processes used during a run: {view.fmt('other_cpu_s')}."]
    return lines


def charts(view: View) -> list[Panel]:
    sides = tuple(view.settings.get("sides") or {})
    return [
        Panel("requests/s", tuple(f"{s}.requests_per_s" for s in sides)),
        Panel("p99 ms", tuple(f"{s}.p99_ms" for s in sides)),
    ]


def bare_round_trips(data: dict[str, Any]) -> float | None:
    values = data["figures"]["bare.redis_round_trips"]["values"]
    return float(values[0]) if values else None


SECTION = Section(
    name="http_enqueue",
    title="HTTP enqueue rate",
    source="bench/http_enqueue.py",
    order=10,
    summary=summary,
    body=body,
    targets=(
        Target(
            "ratio.w1.ours_over_bare", ">=", 1.0, "the bare endpoint's rate, one uvicorn worker"
        ),
        Target(
            "ratio.w2.ours_over_bare", ">=", 1.0, "the bare endpoint's rate, two uvicorn workers"
        ),
        Target(
            "ours.redis_round_trips",
            "<",
            bare_round_trips,
            "fewer Redis round trips than `enqueue_job`",
        ),
    ),
    charts=charts,
)
