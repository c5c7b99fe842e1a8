"""The drain-rate section: `bench/drain.py`'s `results/drain.json`."""

from __future__ import annotations

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import peers_text, side_table

PEERS = ("arq-tuned", "saq", "celery")


def summary(view: View) -> SummaryRow:
    ours = f"full job layer: {view.fmt('ours.jobs_per_s')}"
    if view.has("ours-defaults.jobs_per_s"):
        ours += f" (at the default concurrency: {view.fmt('ours-defaults.jobs_per_s')})"
    return SummaryRow(
        f"worker drain rate, {view.settings.get('jobs', '?')} trivial jobs, one worker "
        "process (jobs/s)",
        ours,
        peers_text(view, PEERS, "jobs_per_s", ""),
    )


def body(view: View) -> list[str]:
    lines = side_table(
        view,
        [
            ("jobs/s", "jobs_per_s", None),
            ("steady jobs/s (middle of the drain)", "steady_jobs_per_s", None),
            ("worker CPU ms/job", "worker_cpu_ms_per_job", 2),
            ("start-up s", "startup_s", 2),
        ],
    )
    ratios = [
        f"{label} {view.fmt(figure)}"
        for label, figure in (
            ("ours/SAQ", "ratio.ours_over_saq"),
            ("ours/arq-tuned", "ratio.ours_over_arq_tuned"),
            ("ours/Celery", "ratio.ours_over_celery"),
        )
        if view.has(figure)
    ]
    s = view.settings
    lines += [
        "",
        f"{s.get('jobs', '?')} jobs are queued before ONE worker process starts; the job is "
        f"{s.get('job', '?')}; jobs/s counts the jobs after the first over the time from the "
        "first done to the last, so start-up is not in it; the steady rate is between the "
        f"{s.get('steady_window_percent', ['?', '?'])[0]}% and "
        f"{s.get('steady_window_percent', ['?', '?'])[1]}% marks. Worker CPU ms/job includes "
        "the worker's start-up. The sides run one after another within each repetition.",
    ]
    if ratios:
        lines += ["", "Ratios of jobs/s within each repetition: " + "; ".join(ratios) + "."]
    if view.has("other_cpu_s"):
        lines += [
            "",
            "CPU seconds other processes used during a run (each side of each repetition): "
            f"{view.fmt('other_cpu_s')}.",
        ]
    return lines


def charts(view: View) -> list[Panel]:
    sides = tuple(view.settings.get("sides") or {})
    return [Panel("jobs/s", tuple(f"{side}.jobs_per_s" for side in sides))]


SECTION = Section(
    name="drain",
    title="Worker drain rate",
    source="bench/drain.py",
    order=20,
    summary=summary,
    body=body,
    targets=(
        Target("ratio.ours_over_saq", ">", 1.0, "ahead of SAQ"),
        Target(
            "ratio.ours_over_arq_tuned",
            ">=",
            0.95,
            "no cost to throughput: the drain with fair scheduling on, close to raw arq tuned "
            "in the same run",
        ),
    ),
    charts=charts,
)
