"""The export-memory section: `bench/export_memory.py`'s `results/export_memory.json`.
The memory target is judged on the RSS growth sampled during the export; the kernel's
VmHWM is shown beside it, labelled as the peak it is."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from bench.report import Panel, Section, SummaryRow, Target, View
from bench.sections import side_table

# "flat": growth at the largest size under FLAT_FACTOR x the smallest size's median growth
# (at least FLAT_FLOOR_MIB, so a tiny baseline does not make the bound meaningless)
FLAT_FACTOR = 1.5
FLAT_FLOOR_MIB = 8.0


def _sizes(view: View) -> list[int]:
    return sorted(int(n) for n in view.settings.get("sizes") or [])


def flat_bound(small: int) -> Callable[[dict[str, Any]], float | None]:
    def bound(data: dict[str, Any]) -> float | None:
        values = data["figures"][f"docs-{small}.rss_growth_mib"]["values"]
        return FLAT_FACTOR * max(FLAT_FLOOR_MIB, statistics.median(values)) if values else None

    return bound


def targets(view: View) -> tuple[Target, ...]:
    sizes = _sizes(view)
    if not sizes:
        return ()
    big, small = sizes[-1], sizes[0]
    found = [
        Target(
            f"docs-{big}.rss_growth_mib",
            "<",
            float(view.settings.get("target_mib", 64)),
            "RSS growth at the largest size under the memory budget",
        )
    ]
    if big != small:
        found.append(
            Target(
                f"docs-{big}.rss_growth_mib",
                "<",
                flat_bound(small),
                "flat: RSS growth at the largest size under one and a half times the "
                "smallest size's median growth (with a floor of eight MiB)",
            )
        )
    return tuple(found)


def summary(view: View) -> SummaryRow:
    sizes = _sizes(view)
    cells = [
        f"{n} documents: {view.fmt(f'docs-{n}.documents_per_s')} documents/s, RSS growth "
        f"{view.fmt(f'docs-{n}.rss_growth_mib')} MiB"
        for n in reversed(sizes)
    ]
    return SummaryRow(
        f"export of up to {sizes[-1] if sizes else '?'} documents "
        f"({view.settings.get('format', '?')}), one worker",
        "; ".join(cells),
    )


def body(view: View) -> list[str]:
    lines = side_table(
        view,
        [
            ("documents/s", "documents_per_s", None),
            ("RSS growth MiB (sampled)", "rss_growth_mib", None),
            ("VmHWM growth MiB (kernel peak)", "vmhwm_growth_mib", None),
            ("export s", "export_s", None),
            ("CPU s of other processes", "other_cpu_s", None),
        ],
    )
    s = view.settings
    verified = [r for r in view.data.get("runs") or [] if (r.get("verified") or {}).get("ok")]
    lines += [
        "",
        f"About {s.get('text_bytes', '?')} B of text per document. RSS is sampled every "
        f"{s.get('rss_sample_interval_s', '?')} s from /proc; growth = the peak sampled during "
        "the export minus the last sample before it, and the target is judged on it. VmHWM is "
        "the kernel's high-water mark of the worker's whole life, which also sees spikes "
        "between samples, minus the same baseline. Worker settings: "
        f"{s.get('worker_settings', '?')}. Archives downloaded and verified: {len(verified)} "
        f"of {len(view.data.get('runs') or [])} exports.",
    ]
    return lines


def charts(view: View) -> list[Panel]:
    sizes = _sizes(view)
    return [
        Panel(
            "RSS growth MiB (sampled)",
            tuple(f"docs-{n}.rss_growth_mib" for n in sizes),
            line=float(view.settings.get("target_mib", 64)),
        ),
        Panel("documents/s", tuple(f"docs-{n}.documents_per_s" for n in sizes)),
    ]


SECTION = Section(
    name="export_memory",
    title="Export memory",
    source="bench/export_memory.py",
    order=60,
    summary=summary,
    body=body,
    targets=targets,
    charts=charts,
)
