"""The crash-recovery section: `bench/crash_recovery.py`'s `results/crash_recovery.json`.
The bound is computed from the lease the run's workers used, as the JSON records it."""

from __future__ import annotations

from typing import Any

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import side_table

MARGIN_S = 2.0  # issue 9: restarted within WORKER_LEASE_SECONDS + 2 s


def bound(data: dict[str, Any]) -> float | None:
    """The lease our workers ran with, plus the margin."""
    lease = data["settings"]["ours"]["WORKER_LEASE_SECONDS"]
    return float(lease) + MARGIN_S


def summary(view: View) -> SummaryRow:
    peers = (
        f"raw arq at its defaults: {view.fmt('arq.delay_s')} s" if view.has("arq.delay_s") else ""
    )
    return SummaryRow(
        "crash recovery: kill -9 of the worker to the job's next start (each trial a repetition)",
        f"{view.fmt('ours.delay_s')} s",
        peers,
    )


def body(view: View) -> list[str]:
    lines = side_table(view, [("seconds, kill -9 to the next start", "delay_s", 2)])
    ours = view.settings.get("ours") or {}
    arq = view.settings.get("arq") or {}
    if ours:
        lines += [
            "",
            f"Ours: WORKER_LEASE_SECONDS={ours.get('WORKER_LEASE_SECONDS')}, a heartbeat every "
            f"{ours.get('heartbeat_interval_s')} s, a worker is dead after "
            f"{ours.get('dead_after_s')} s without one, and the reaper looks every "
            f"{ours.get('reaper_interval_s')} s.",
        ]
    if arq:
        lines += [
            "",
            f"Raw arq: job_timeout={arq.get('job_timeout_s')} s, so its claim on a running job "
            f"expires {arq.get('in_progress_ttl_s')} s after the job was picked up, never "
            "renewed; its trials run concurrently, one queue each.",
        ]
    return lines


def charts(view: View) -> list[Panel]:
    return [Panel("seconds (log)", ("ours.delay_s", "arq.delay_s"), log_scale=True)]


SECTION = Section(
    name="crash_recovery",
    title="Crash recovery",
    source="bench/crash_recovery.py",
    order=50,
    summary=summary,
    body=body,
    targets=(Target("ours.delay_s", "<", bound, "restarted within the run's lease plus a margin"),),
    charts=charts,
)
