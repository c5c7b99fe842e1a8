"""The enqueue-to-start latency section: `bench/latency.py`'s `results/latency.json`."""

from __future__ import annotations

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import side_table

PEERS = ("arq-defaults", "arq-tuned", "saq", "celery")


def summary(view: View) -> SummaryRow:
    peers = "; ".join(
        f"{side}: p50 {view.fmt(f'{side}.p50_ms')} ms, p99 {view.fmt(f'{side}.p99_ms')} ms, "
        f"idle {view.fmt(f'{side}.idle_cpu_percent')}%"
        for side in PEERS
        if view.has(f"{side}.p50_ms")
    )
    return SummaryRow(
        "enqueue-to-start latency on an idle system (each job stamped as its handler starts)",
        f"via the HTTP API: p50 {view.fmt('ours.p50_ms')} ms, p99 {view.fmt('ours.p99_ms')} ms; "
        f"idle worker {view.fmt('ours.idle_cpu_percent')}% of a core",
        peers,
    )


def body(view: View) -> list[str]:
    lines = side_table(
        view,
        [
            ("p50 ms", "p50_ms", None),
            ("p99 ms", "p99_ms", None),
            ("p99 ms, all probes pooled", "pooled_p99_ms", None),
            ("idle worker CPU, % of a core", "idle_cpu_percent", None),
        ],
    )
    s = view.settings
    gap = s.get("gap_ms") or ["?", "?"]
    lines += [
        "",
        f"{s.get('probes_per_rep', '?')} probes per repetition after "
        f"{s.get('warmup_probes', '?')} warm-up ones, each sent once the previous job ran, "
        f"plus a random {gap[0]}-{gap[1]} ms. Every side's probe job pushes the wall-clock "
        "time as its handler starts; latency is that minus the time just before the enqueue "
        "call (ours: just before `POST /v1/exports`, so ours includes the HTTP request). "
        f"Idle CPU: the worker's process group over {s.get('idle_window_s', '?')} s with "
        "nothing queued, from /proc.",
    ]
    if view.has("ours.record_started_p50_ms"):
        lines += [
            "",
            "Ours, beside it: the job record's `started_at` (when our job layer takes the job, "
            f"before the handler; ms resolution) comes a median p50 of "
            f"{view.fmt('ours.record_started_p50_ms')} ms after the POST is sent, and the POST "
            f"itself is answered after a median p50 of {view.fmt('ours.post_answer_p50_ms')} ms.",
        ]
    if view.has("other_cpu_s"):
        lines += [
            "",
            f"CPU seconds other processes used during a run: {view.fmt('other_cpu_s')}.",
        ]
    return lines


def charts(view: View) -> list[Panel]:
    sides = tuple(view.settings.get("sides") or {})
    return [
        Panel("p50 ms (log)", tuple(f"{s}.p50_ms" for s in sides), log_scale=True),
        Panel("p99 ms (log)", tuple(f"{s}.p99_ms" for s in sides), log_scale=True),
        Panel("idle CPU, % of a core", tuple(f"{s}.idle_cpu_percent" for s in sides)),
    ]


SECTION = Section(
    name="latency",
    title="Enqueue-to-start latency",
    source="bench/latency.py",
    order=30,
    summary=summary,
    body=body,
    targets=(
        Target("ours.p50_ms", "<", 15, "p50 latency via the HTTP API"),
        Target("ours.p99_ms", "<", 50, "p99 latency via the HTTP API"),
        Target("ours.idle_cpu_percent", "<", 2, "idle worker CPU"),
    ),
    charts=charts,
)
