"""The webhook section: `bench/webhook_throughput.py`'s `results/webhook_throughput.json`.
No target: the rate is reported."""

from __future__ import annotations

from bench.report import Panel, Section, SummaryRow, View
from bench.sections import side_table


def summary(view: View) -> SummaryRow:
    s = view.settings
    cells = [
        f"{settings}: {view.fmt(f'{side}.deliveries_per_s')} deliveries/s"
        for side, settings in (s.get("sides") or {}).items()
        if view.has(f"{side}.deliveries_per_s")
    ]
    return SummaryRow(
        f"webhook deliveries: {s.get('events', '?')} events x {s.get('endpoints', '?')} "
        "endpoints, one worker",
        "; ".join(cells),
    )


def body(view: View) -> list[str]:
    lines = side_table(
        view,
        [
            ("deliveries/s", "deliveries_per_s", None),
            ("wall s (start-up included)", "wall_s", None),
            (
                "worker CPU ms/delivery after start-up",
                "worker_cpu_ms_per_delivery_after_start",
                None,
            ),
            ("in flight, max", "in_flight_max", None),
            ("CPU s of other processes", "other_cpu_s", None),
        ],
    )
    s = view.settings
    ok = all((r.get("verified") or {}).get("ok") for r in view.data.get("runs") or [])
    lines += [
        "",
        f"{s.get('deliveries', '?')} deliveries per run: {s.get('published', '?')}; "
        f"{s.get('receivers', '?')}; deliveries/s = deliveries / (last received - first "
        "received). Every delivery read back as succeeded after exactly one attempt: "
        f"{'yes' if ok else 'NO'}. Worker settings: {s.get('worker_settings', '?')}.",
    ]
    return lines


def charts(view: View) -> list[Panel]:
    sides = tuple(view.settings.get("sides") or {})
    return [Panel("deliveries/s", tuple(f"{s}.deliveries_per_s" for s in sides))]


SECTION = Section(
    name="webhook_throughput",
    title="Webhook deliveries",
    source="bench/webhook_throughput.py",
    order=70,
    summary=summary,
    body=body,
    charts=charts,
)
