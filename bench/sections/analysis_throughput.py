"""The I/O-bound throughput section: `bench/analysis_throughput.py`'s
`results/analysis_throughput.json`. Ours is compared with the Celery recipe as the recipe
configures it (prefork, Celery's default concurrency) and, beside it, with the same task
in Celery's gevent pool at our concurrency; both ratios are shown."""

from __future__ import annotations

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import side_table

CELERY = (
    ("celery-prefork", "ratio.ours_over_celery_prefork", "the Celery recipe"),
    ("celery-gevent", "ratio.ours_over_celery_gevent", "Celery's gevent pool"),
)


def summary(view: View) -> SummaryRow:
    s = view.settings
    sides = s.get("sides") or {}
    peers = "; ".join(
        f"{what} ({sides.get(side, '?')}): {view.fmt(f'{side}.jobs_per_s')} jobs/s, ours/it "
        f"{view.fmt(ratio)}"
        for side, ratio, what in CELERY
        if view.has(f"{side}.jobs_per_s")
    )
    return SummaryRow(
        f"I/O-bound throughput: {s.get('jobs', '?')} analyses, fake Claude answering in "
        f"{s.get('claude_delay_s', '?')} s",
        f"one worker process ({sides.get('ours', '?')}): {view.fmt('ours.jobs_per_s')} jobs/s",
        peers,
    )


def body(view: View) -> list[str]:
    lines = side_table(
        view,
        [
            ("jobs/s", "jobs_per_s", None),
            ("wall s (start-up included)", "wall_s", None),
            ("Claude calls in flight (max)", "claude_max_in_flight", None),
            ("worker CPU s", "worker_cpu_s", None),
            ("CPU s of other processes", "other_cpu_s", None),
        ],
    )
    ratios = [f"ours/{side} {view.fmt(ratio)}" for side, ratio, _ in CELERY if view.has(ratio)]
    s = view.settings
    lines += [
        "",
        "jobs/s = jobs / (last finish - first start). Each of our jobs "
        f"{s.get('ours_work', '?')}; the Celery task is {s.get('celery_work', '?')}. The "
        "sides run one after another within each repetition.",
    ]
    if ratios:
        lines += ["", "Ratios of jobs/s within each repetition: " + "; ".join(ratios) + "."]
    return lines


def charts(view: View) -> list[Panel]:
    sides = tuple(view.settings.get("sides") or {})
    return [Panel("jobs/s (log)", tuple(f"{s}.jobs_per_s" for s in sides), log_scale=True)]


SECTION = Section(
    name="analysis_throughput",
    title="I/O-bound throughput",
    source="bench/analysis_throughput.py",
    order=40,
    summary=summary,
    body=body,
    targets=(
        Target(
            "ratio.ours_over_celery_prefork",
            ">=",
            50,
            "far ahead of the Celery recipe as it is configured",
        ),
    ),
    charts=charts,
)
