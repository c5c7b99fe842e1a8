"""Turn the benchmarks' JSON files into RESULTS.md and PNG charts (matplotlib).

    .venv/bin/python -m bench --report-only        (after a run)

Every figure is the median of the repetitions with [min-max]; each section names the exact
settings and versions, and the summary table checks each of issue 9's targets.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUNLOG = "runlog.json"
LEASE_S = 10.0  # WORKER_LEASE_SECONDS's default, which the crash benchmark runs with


def load_runlog(results: Path) -> dict[str, dict[str, Any]]:
    path = results / RUNLOG
    return json.loads(path.read_text()) if path.exists() else {}


def save_runlog(results: Path, ran: dict[str, dict[str, Any]]) -> None:
    (results / RUNLOG).write_text(json.dumps(ran, indent=2) + "\n")


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def fmt(spread: dict[str, float], digits: int = 0, unit: str = "") -> str:
    """`median [min-max]`."""
    m, lo, hi = spread["median"], spread["min"], spread["max"]
    return f"{m:.{digits}f}{unit} [{lo:.{digits}f}-{hi:.{digits}f}]"


def verdict(ok: bool, detail: str) -> str:
    return f"**met** ({detail})" if ok else f"**missed** ({detail})"


# ---------------------------------------------------------------------------- charts


def _bars(
    path: Path,
    title: str,
    panels: list[tuple[str, list[str], list[dict[str, float]], bool]]
    | list[tuple[str, list[str], list[dict[str, float]], bool, float | None]],
    colors: list[str] | None = None,
) -> None:
    """One row of bar charts: (y label, bar labels, spreads, log scale[, target]) per
    panel; a bar is the median, its whisker min-max, a target a dashed red line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ylabel, labels, spreads, log_scale = panel[:4]
        target = panel[4] if len(panel) > 4 else None
        medians = [s["median"] for s in spreads]
        low = [s["median"] - s["min"] for s in spreads]
        high = [s["max"] - s["median"] for s in spreads]
        palette = colors or ["#2b6cb0" if i == 0 else "#a0aec0" for i in range(len(labels))]
        ax.bar(range(len(labels)), medians, yerr=[low, high], capsize=4,
               color=palette[: len(labels)])  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        for i, value in enumerate(medians):
            text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
            ax.annotate(text, (i, value), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 3), textcoords="offset points")  # fmt: skip
        if target is not None:
            ax.axhline(target, color="#c53030", linestyle="--", linewidth=1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _strip(
    path: Path,
    title: str,
    groups: list[tuple[str, list[float]]],
    ylabel: str,
    target: float | None = None,
) -> None:
    """Every value of each group as a dot, the median as a line, a target dashed (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (_, values) in enumerate(groups):
        if not values:
            continue
        xs = [i + (j - len(values) / 2) * 0.02 for j in range(len(values))]
        ax.scatter(xs, values, s=18, color="#2b6cb0" if i == 0 else "#718096", zorder=3)
        ax.hlines(statistics.median(values), i - 0.25, i + 0.25, color="black", zorder=4)
    if target is not None:
        ax.axhline(target, color="#c53030", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------- sections


class Report:
    """Collects the summary rows, the sections and the charts of one report."""

    def __init__(self, results: Path, charts: Path, link_prefix: str) -> None:
        self.results = results
        self.charts = charts
        self.link_prefix = link_prefix
        self.summary: list[str] = []
        self.sections: list[str] = []

    def chart(self, name: str, draw: Callable[[Path], None]) -> str:
        path = self.charts / f"{name}.png"
        try:
            draw(path)
        except Exception as exc:  # a chart must not lose the tables
            return f"(chart {name} failed: {exc})"
        return f"![{name}]({self.link_prefix}{name}.png)"

    def missing(self, what: str, name: str) -> None:
        self.summary.append(f"| {what} | not measured: `{name}` did not run or failed | | | |")

    # -- HTTP enqueue --------------------------------------------------------------------

    def http_enqueue(self) -> None:
        data = _load(self.results, "http_enqueue")
        if not data or not data.get("summary"):
            self.missing("HTTP enqueue rate and p99, 64 connections", "http_enqueue")
            return
        rows = {(r["side"], r["uvicorn_workers"]): r for r in data["summary"]}
        trips = data.get("redis_round_trips_per_request", {})
        verdicts, cells = [], []
        for workers in (1, 2):
            ours, bare = rows.get(("ours", workers)), rows.get(("bare", workers))
            if not ours:
                continue
            cells.append(
                f"{workers} worker{'s' if workers > 1 else ''}: "
                f"{fmt(ours['requests_per_s'])} req/s, p99 {fmt(ours['p99_ms'], 1)} ms"
            )
            if bare:
                ratio = ours["requests_per_s"]["median"] / bare["requests_per_s"]["median"]
                verdicts.append((ratio >= 1.0, f"{workers}w: {ratio:.2f}x the bare rate"))
        bare_cells = [
            f"{w} worker{'s' if w > 1 else ''}: {fmt(r['requests_per_s'])} req/s, "
            f"p99 {fmt(r['p99_ms'], 1)} ms"
            for (side, w), r in sorted(rows.items())
            if side == "bare"
        ]
        fewer = trips.get("ours", 99) < trips.get("bare", 0)
        ok = bool(verdicts) and all(v for v, _ in verdicts) and fewer
        detail = "; ".join(d for _, d in verdicts) + (
            f"; Redis round trips per request {trips.get('ours', float('nan')):.0f} vs "
            f"{trips.get('bare', float('nan')):.0f}"
        )
        self.summary.append(
            "| HTTP enqueue rate and p99 at 64 connections (wrk) "
            f"| `POST /v1/exports` (auth, record, idempotency): {'; '.join(cells)} "
            f"| bare FastAPI + `enqueue_job`: {'; '.join(bare_cells)} "
            "| at least the bare rate, in fewer Redis round trips than `enqueue_job` "
            f"| {verdict(ok, detail)} |"
        )
        lines = [
            "| endpoint | uvicorn workers | requests/s | p50 ms | p99 ms "
            "| Redis commands/request | every 202 made one job |",
            "|---|---:|---|---|---|---:|---|",
        ]
        for (side, workers), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            name = "`POST /v1/exports`" if side == "ours" else "bare `POST /enqueue`"
            lines.append(
                f"| {name} | {workers} | {fmt(r['requests_per_s'])} | {fmt(r['p50_ms'], 1)} "
                f"| {fmt(r['p99_ms'], 1)} | {r['redis_commands_per_request']['median']:.1f} "
                f"| {'yes' if r['all_jobs_made'] else 'NO'} |"
            )
        order = sorted(rows, key=lambda k: (k[0] != "ours", k[1]))  # ours first
        labels = [f"{'ours' if s == 'ours' else 'bare'} x{w}" for s, w in order]
        spreads = [rows[k] for k in order]
        image = self.chart(
            "http_enqueue",
            lambda p: _bars(
                p,
                "HTTP enqueue, wrk -c64 (median, whiskers min-max)",
                [
                    ("requests/s", labels, [r["requests_per_s"] for r in spreads], False),
                    ("p99 latency ms", labels, [r["p99_ms"] for r in spreads], False),
                ],
            ),
        )
        other = [r["other_cpu_s"]["median"] for r in rows.values()]
        self.sections.append(
            "\n".join(
                [
                    "## HTTP enqueue rate (`bench/http_enqueue.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    f"Redis round trips per request (counted in-process, every write to a "
                    f"Redis connection): ours {trips.get('ours', float('nan')):.1f} "
                    f"(an idempotent replay: {trips.get('ours_replay', float('nan')):.0f}), "
                    f"bare `enqueue_job` {trips.get('bare', float('nan')):.1f}.",
                    "",
                    f"Settings: {re.sub(r' Copyright [^;]*', '', str(data.get('wrk')))}, "
                    f"{data.get('seconds')} s per run after a "
                    "warm-up, `uvicorn --no-access-log --workers N`, our API at its defaults "
                    "(`LOG_LEVEL=INFO`, one account key as a SHA-256 digest), a unique "
                    "`Idempotency-Key` per request. Versions: "
                    f"{_versions(data.get('versions', {}))}. CPU used by other people's "
                    f"processes during a run: median {min(other):.1f}-{max(other):.1f} s "
                    f"per {data.get('seconds')} s run.",
                ]
            )
        )

    # -- drain ---------------------------------------------------------------------------

    def drain(self) -> None:
        data = _load(self.results, "drain")
        if not data or not data.get("summary"):
            self.missing("worker drain rate, trivial jobs", "drain")
            return
        rows = {r["side"]: r for r in data["summary"]}
        ours = rows.get("ours")
        arq, saq = rows.get("arq-tuned"), rows.get("saq")
        if ours:
            parts, ok = [], True
            if saq:
                ahead = ours["jobs_per_s"]["median"] / saq["jobs_per_s"]["median"]
                ok &= ahead > 1
                parts.append(f"{ahead:.2f}x SAQ")
            if arq:
                share = ours["jobs_per_s"]["median"] / arq["jobs_per_s"]["median"]
                ok &= share >= 0.85
                parts.append(f"{100 * share:.0f}% of raw arq tuned, target >= 85%")
            peers = "; ".join(
                f"{side}: {fmt(rows[side]['jobs_per_s'])}"
                for side in ("arq-tuned", "saq", "celery")
                if side in rows
            )
            self.summary.append(
                "| worker drain rate, trivial jobs, 1 worker process (jobs/s) "
                f"| full job layer: {fmt(ours['jobs_per_s'])} "
                f"(at the default concurrency 20: "
                f"{fmt(rows['ours-defaults']['jobs_per_s']) if 'ours-defaults' in rows else '-'})"
                f" | {peers} | ahead of SAQ, within 15% of raw arq "
                f"| {verdict(ok, '; '.join(parts))} |"
            )
        lines = [
            "| side | settings | jobs/s | steady 10-90% jobs/s | worker CPU ms/job "
            "| Redis CPU s | start-up s |",
            "|---|---|---|---|---:|---:|---:|",
        ]
        for side, r in rows.items():
            lines.append(
                f"| {side} | {r['settings']} | {fmt(r['jobs_per_s'])} "
                f"| {fmt(r['steady_jobs_per_s'])} | {r['worker_cpu_ms_per_job']['median']:.2f} "
                f"| {r['redis_cpu_s']['median']:.2f} | {r['startup_s']['median']:.2f} |"
            )
        labels = list(rows)
        image = self.chart(
            "drain",
            lambda p: _bars(
                p,
                f"{data['jobs']} trivial jobs, 1 worker process (median, whiskers min-max)",
                [
                    (
                        "jobs/s (dashed: 85% of raw arq tuned)",
                        labels,
                        [rows[s]["jobs_per_s"] for s in labels],
                        False,
                        0.85 * arq["jobs_per_s"]["median"] if arq else None,
                    )
                ],
            ),
        )
        other = [r["other_cpu_s"]["median"] for r in rows.values()]
        self.sections.append(
            "\n".join(
                [
                    "## Worker drain rate (`bench/drain.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    f"{data['jobs']} jobs queued before ONE worker process starts; the job is "
                    f"{data['job']}; jobs/s = (N - 1) / (last done - first done), so start-up "
                    "is not in it. Worker CPU ms/job includes the worker's start-up (imports). "
                    f"Versions: {_versions(data['versions'].get('ours', {}))}; Celery side "
                    f"{_versions(data['versions'].get('celery') or {})}. CPU used by other "
                    f"people's processes per run: median {min(other):.1f}-{max(other):.1f} s.",
                ]
            )
        )

    # -- latency -------------------------------------------------------------------------

    def latency(self) -> None:
        data = _load(self.results, "latency")
        if not data or not data.get("summary"):
            self.missing("enqueue-to-start latency, idle system", "latency")
            return
        rows = {r["side"]: r for r in data["summary"]}
        ours = rows.get("ours")
        if ours:
            p50, p99, cpu = ours["p50_ms"], ours["p99_ms"], ours["idle_cpu_percent"]
            ok = p50["median"] < 15 and p99["median"] < 50 and cpu["median"] < 2
            detail = (
                f"p50 {p50['median']:.1f} < 15, p99 {p99['median']:.1f} < 50 ms, "
                f"idle {cpu['median']:.2f}% < 2%"
            )
            peers = "; ".join(
                f"{side}: p50 {rows[side]['p50_ms']['median']:.1f}, p99 "
                f"{rows[side]['p99_ms']['median']:.1f} ms, idle "
                f"{rows[side]['idle_cpu_percent']['median']:.2f}%"
                for side in ("arq-defaults", "arq-tuned", "saq", "celery")
                if side in rows
            )
            self.summary.append(
                "| enqueue-to-start latency, idle system "
                f"| via the HTTP API: p50 {fmt(p50, 1)} ms, p99 {fmt(p99, 1)} ms; idle worker "
                f"{fmt(cpu, 2)}% of a core | {peers} "
                f"| p50 < 15 ms, p99 < 50 ms, idle worker < 2% CPU | {verdict(ok, detail)} |"
            )
        lines = [
            "| side | how a probe is sent; settings | p50 ms | p99 ms | pooled p99 ms (probes) "
            "| idle worker CPU, % of a core |",
            "|---|---|---|---|---|---|",
        ]
        for side, r in rows.items():
            pooled = r["pooled"]
            lines.append(
                f"| {side} | {r['settings']} | {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} "
                f"| {pooled['p99_ms']:.1f} ({pooled['probes']}) "
                f"| {fmt(r['idle_cpu_percent'], 2)} |"
            )
        labels = list(rows)
        image = self.chart(
            "latency",
            lambda p: _bars(
                p,
                "enqueue-to-start latency, idle system (median of reps, whiskers min-max)",
                [
                    ("p50 ms (log)", labels, [rows[s]["p50_ms"] for s in labels], True, 15),
                    ("p99 ms (log)", labels, [rows[s]["p99_ms"] for s in labels], True, 50),
                    ("idle CPU % of a core", labels,
                     [rows[s]["idle_cpu_percent"] for s in labels], False, 2),
                ],
            ),
        )  # fmt: skip
        api = [
            r["api_answer_ms"]["p50"]
            for r in data.get("runs", [])
            if r["side"] == "ours" and r.get("api_answer_ms")
        ]
        api_note = (
            f" Of ours, the POST itself takes a median {sorted(api)[len(api) // 2]:.1f} ms "
            "to answer (the job often starts before the answer arrives)."
            if api
            else ""
        )
        self.sections.append(
            "\n".join(
                [
                    "## Enqueue-to-start latency (`bench/latency.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    f"{data['probes_per_rep']} probes per repetition, {data['reps']} "
                    "repetitions, each probe after the previous job ran plus a random "
                    f"{data['gap_s'][0] * 1000:.0f}-{data['gap_s'][1] * 1000:.0f} ms. Ours is "
                    "measured end to end through the HTTP API (`POST /v1/exports` to the "
                    "record's `started_at`, ms resolution); the peers from their enqueue call "
                    f"to the job's own start mark.{api_note} Idle CPU: the worker's process "
                    f"group over {data['idle_window_s']:g} s with nothing queued, from "
                    f"/proc. Versions: {_versions(data['versions'].get('ours', {}))}.",
                ]
            )
        )

    # -- analysis ------------------------------------------------------------------------

    def analysis(self) -> None:
        data = _load(self.results, "analysis_throughput")
        if not data or not data.get("summary"):
            self.missing("I/O-bound throughput, 200 analyses", "analysis_throughput")
            return
        rows = data["summary"]
        ours = next((r for r in rows if r["side"] == "ours"), None)
        celery = next((r for r in rows if r["side"] == "celery"), None)
        if ours and celery:
            ratio = ours["jobs_per_s"]["median"] / celery["jobs_per_s"]["median"]
            self.summary.append(
                f"| I/O-bound throughput: {data['jobs']} analyses, fake Claude answering in "
                f"{data['claude_delay_s']:g} s | 1 worker process ({ours['settings']}): "
                f"{fmt(ours['jobs_per_s'], 1)} jobs/s | the Celery recipe: "
                f"{fmt(celery['jobs_per_s'], 2)} jobs/s | at least 50x Celery's jobs/s "
                f"| {verdict(ratio >= 50, f'{ratio:.1f}x')} |"
            )
        lines = [
            "| side | settings | jobs/s | wall s (incl. start-up) | Claude calls in flight (max) "
            "| worker CPU s |",
            "|---|---|---|---|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['side']} | {r['settings']} | {fmt(r['jobs_per_s'], 2)} "
                f"| {fmt(r['wall_s'], 1)} | {r['claude_max_in_flight']} "
                f"| {r['cpu_s_median'].get('worker', 0):.1f} |"
            )
        labels = [f"{r['side']}" for r in rows]
        image = self.chart(
            "analysis_throughput",
            lambda p: _bars(
                p,
                f"{data['jobs']} analyses, Claude answering in {data['claude_delay_s']:g} s, "
                "1 worker process",
                [("jobs/s (log)", labels, [r["jobs_per_s"] for r in rows], True)],
            ),
        )
        v = data.get("versions", {})
        self.sections.append(
            "\n".join(
                [
                    "## I/O-bound throughput (`bench/analysis_throughput.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    "jobs/s = jobs / (last finish - first start). Each of our jobs reads its "
                    "document from S3 (moto), calls the fake Messages API through "
                    "`AsyncAnthropic`, writes the analysis to S3 and counts usage; the Celery "
                    "task only calls Claude. Versions: ours "
                    f"{_versions(v.get('ours', {}))}; Celery side "
                    f"{_versions(v.get('celery', {}))}.",
                ]
            )
        )

    # -- crash recovery ------------------------------------------------------------------

    def crash(self) -> None:
        data = _load(self.results, "crash_recovery")
        if not data or not data.get("sides"):
            self.missing("crash recovery, kill -9 to the next start", "crash_recovery")
            return
        sides = data["sides"]
        ours, arq = sides.get("ours"), sides.get("arq")
        if ours:
            bound = LEASE_S + 2
            ok = ours["worst_s"] < bound
            worst = f"worst {ours['worst_s']:.2f} s {'<' if ok else '>='} {bound:g} s"
            arq_cell = (
                f"raw arq defaults: median {arq['median_s']:.1f} s, worst {arq['worst_s']:.1f} s"
                if arq
                else "raw arq: not run"
            )
            self.summary.append(
                f"| crash recovery: kill -9 to the job's next start ({len(ours['delays_s'])} "
                f"trials) | median {ours['median_s']:.2f} s, worst {ours['worst_s']:.2f} s "
                f"[min {ours['min_s']:.2f}] | {arq_cell} "
                f"| under WORKER_LEASE_SECONDS + 2 s = {bound:g} s "
                f"| {verdict(ok, worst)} |"
            )
        groups = [(name, side["delays_s"]) for name, side in sides.items()]
        image = self.chart(
            "crash_recovery",
            lambda p: _strip(p, "kill -9 to the job's next start (each trial; line: median; "
                             f"dashed: {LEASE_S + 2:g} s)", groups, "seconds (log)",
                             LEASE_S + 2),
        )  # fmt: skip
        lines = ["| side | trials | median s | worst s | min s |", "|---|---:|---:|---:|---:|"]
        for name, side in sides.items():
            lines.append(
                f"| {name} | {len(side['delays_s'])} | {side['median_s']:.2f} "
                f"| {side['worst_s']:.2f} | {side['min_s']:.2f} |"
            )
        self.sections.append(
            "\n".join(
                [
                    "## Crash recovery (`bench/crash_recovery.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    "Ours at its defaults (`WORKER_LEASE_SECONDS=10`), trials one after "
                    "another; raw arq 0.28 at its defaults (`job_timeout=300`, so a 310 s "
                    "claim), its trials concurrent. Method in bench/README.md. Versions: "
                    f"{_versions(data.get('versions', {}))}.",
                ]
            )
        )

    # -- export memory -------------------------------------------------------------------

    def export(self) -> None:
        data = _load(self.results, "export_memory")
        if not data or not data.get("runs"):
            self.missing("export of 100k documents", "export_memory")
            return
        by_size: dict[int, list[dict[str, Any]]] = {}
        for run in data["runs"]:
            by_size.setdefault(run["docs"], []).append(run)
        sizes = sorted(by_size)
        stats = {
            docs: {
                "dps": _spread([r["documents_per_s"] for r in runs]),
                "growth": _spread([r["rss_growth_mib"] for r in runs]),
                "hwm": _spread([r["vmhwm_growth_mib"] for r in runs]),
                "verified": all(r.get("verified", {}).get("ok") for r in runs),
                "runs": len(runs),
            }
            for docs, runs in by_size.items()
        }
        big, small = sizes[-1], sizes[0]
        b, s = stats[big], stats[small]
        ok = b["hwm"]["max"] < 64 and (
            big == small or b["hwm"]["median"] < 1.5 * max(8, s["hwm"]["median"])
        )
        detail = (
            f"VmHWM growth at most {b['hwm']['max']:.1f} MiB at {big:,} documents, median "
            f"{s['hwm']['median']:.1f} MiB at {small:,}"
        )
        self.summary.append(
            f"| export of {big:,} documents ({data['format']}) | {fmt(b['dps'])} documents/s, "
            f"RSS growth {fmt(b['growth'], 1)} MiB (VmHWM {fmt(b['hwm'], 1)}) "
            f"| {small:,} documents: {fmt(s['dps'])} documents/s, growth "
            f"{fmt(s['growth'], 1)} MiB (VmHWM {fmt(s['hwm'], 1)}) "
            "| RSS growth under 64 MiB and flat "
            f"| {verdict(ok, detail)} |"
        )
        lines = [
            "| documents | runs | documents/s | RSS growth MiB | VmHWM growth MiB "
            "| archive verified |",
            "|---:|---:|---|---|---|---|",
        ]
        for docs in sizes:
            st = stats[docs]
            lines.append(
                f"| {docs:,} | {st['runs']} | {fmt(st['dps'])} | {fmt(st['growth'], 1)} "
                f"| {fmt(st['hwm'], 1)} | {'yes' if st['verified'] else 'NO'} |"
            )
        labels = [f"{d:,}" for d in sizes]
        image = self.chart(
            "export_memory",
            lambda p: _bars(
                p,
                f"export ({data['format']}), 1 worker (median, whiskers min-max)",
                [
                    ("RSS growth MiB (VmHWM)", labels, [stats[d]["hwm"] for d in sizes], False, 64),
                    ("documents/s", labels, [stats[d]["dps"] for d in sizes], False),
                ],
            ),
        )
        self.sections.append(
            "\n".join(
                [
                    "## Export memory (`bench/export_memory.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    f"~{data.get('text_bytes')} B of text per document; RSS sampled every "
                    f"{data.get('rss_sample_interval_s')} s from /proc; growth = peak during "
                    "the export - RSS just before; VmHWM is the kernel's high-water mark. "
                    f"Worker settings: {data.get('worker_settings')}. The 100k export runs "
                    "once per full run (with its seeding, about half an hour against moto on "
                    "the shared machine), the 10k one three times. Versions: "
                    f"{_versions(data.get('versions', {}))}."
                    + (f" {data['note']}" if data.get("note") else ""),
                ]
            )
        )

    # -- webhooks ------------------------------------------------------------------------

    def webhooks(self) -> None:
        data = _load(self.results, "webhook_throughput")
        if not data or not data.get("summary"):
            self.missing("webhook deliveries/s", "webhook_throughput")
            return
        rows = data["summary"]
        first = rows[0]
        self.summary.append(
            f"| webhook deliveries/s: {data['events']:,} events x {data['endpoints']} endpoints "
            f"| {fmt(first['deliveries_per_s'])} deliveries/s "
            f"(WORKER_CONCURRENCY={first['worker_concurrency']}, "
            f"{first['worker_cpu_ms_per_delivery_after_start']['median']:.2f} ms CPU each) "
            "| | report | reported |"
        )
        lines = [
            "| WORKER_CONCURRENCY | runs | deliveries/s | worker CPU ms/delivery | all succeeded |",
            "|---:|---:|---|---:|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['worker_concurrency']} | {r['runs']} | {fmt(r['deliveries_per_s'])} "
                f"| {r['worker_cpu_ms_per_delivery_after_start']['median']:.2f} "
                f"| {'yes' if r['all_succeeded'] else 'NO'} |"
            )
        labels = [f"concurrency {r['worker_concurrency']}" for r in rows]
        image = self.chart(
            "webhook_throughput",
            lambda p: _bars(
                p,
                f"{data['deliveries']:,} webhook deliveries, 1 worker (median, whiskers min-max)",
                [("deliveries/s", labels, [r["deliveries_per_s"] for r in rows], False)],
            ),
        )
        self.sections.append(
            "\n".join(
                [
                    "## Webhook deliveries (`bench/webhook_throughput.py`)",
                    "",
                    image,
                    "",
                    *lines,
                    "",
                    "Every event published before one worker starts; local receivers answer "
                    "200 at once; deliveries/s = deliveries / (last received - first "
                    f"received). Versions: {_versions(data.get('versions', {}))}.",
                ]
            )
        )


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"median": median, "min": ordered[0], "max": ordered[-1], "n": n}


def _versions(found: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in found.items() if v) or "-"


def _machine_note(results: Path) -> str:
    notes = []
    for name in ("http_enqueue", "drain", "latency"):
        data = _load(results, name)
        if data and data.get("machine"):
            m = data["machine"]
            notes.append(f"{name} started at load average {m['loadavg_at_start']}")
    return "; ".join(notes)


def write(results: Path, report_dir: Path, *, quick: bool) -> Path:
    """Write RESULTS.md (and charts/*.png) into `report_dir` from the JSON in `results`."""
    charts = report_dir / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    report = Report(results, charts, "charts/")
    for section in (report.http_enqueue, report.drain, report.latency, report.analysis,
                    report.crash, report.export, report.webhooks):  # fmt: skip
        try:
            section()
        except Exception as exc:  # one broken file must not lose the rest
            report.summary.append(f"| {section.__name__} | report failed: {exc!r} | | | |")
    ran = load_runlog(results)
    git = (_load(results, "drain") or _load(results, "http_enqueue") or {}).get("git_at_start", {})
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    total_min = sum(step.get("seconds", 0) for step in ran.values()) / 60
    failed = [name for name, step in ran.items() if step.get("exit") != 0]
    header = [
        "# Benchmark results" + (" (QUICK RUN: tiny sizes, figures mean nothing)" if quick else ""),
        "",
        f"Written by `bench/run.sh{' --quick' if quick else ''}` on {when} "
        f"({total_min:.0f} min of benchmarks), commit `{git.get('commit', '?')}`"
        + (f" with uncommitted changes in {', '.join(git['dirty'])}" if git.get("dirty") else "")
        + ". How each is measured: [README.md](README.md).",
        "",
        f"**Shared cores.** {os.cpu_count()} cores: every benchmark's system under test, its "
        "Redis and its load generator share them, and so do other people's processes when "
        "any run (this machine is shared). Each section gives the CPU those used meanwhile; "
        f"near 0 means the machine was otherwise quiet. {_machine_note(results)}.",
        "",
    ]
    if failed:
        header += [f"Failed or timed out: {', '.join(failed)} (see `bench/results/`).", ""]
    body = [
        "## Summary",
        "",
        "| what | this service | side by side with | target | result |",
        "|---|---|---|---|---|",
        *report.summary,
        "",
        *("\n\n".join(report.sections).split("\n")),
        "",
    ]
    findings = Path(__file__).with_name("findings.md")
    if not quick and findings.exists():
        # Hand-written: where a target is missed, by how much, and what bounds it (profiles).
        body += [findings.read_text().strip(), ""]
    path = report_dir / "RESULTS.md"
    path.write_text("\n".join(header + body))
    return path
