"""What `bench/report.py` shows of each benchmark's JSON file: one module per benchmark,
each with a module-level `SECTION` (a `bench.report.Section`), found by
`bench.report.sections()`. Adding a benchmark's section is adding a module here; see
bench/README.md, "Adding a section".

A renderer reads its JSON file only through `bench.report.View` (`view.fmt(figure_id)`,
`view.settings`), so every number it prints comes from that file. Its fixed prose has no
numbers of its own: write "one worker process", not "1 worker process".
"""

from __future__ import annotations

from bench.report import View, table


def side_table(view: View, columns: list[tuple[str, str, int | None]]) -> list[str]:
    """One row per side named in `settings.sides` (side -> its settings), one column per
    (header, figure suffix, digits): the figure `<side>.<suffix>` of each side."""
    sides: dict[str, str] = view.settings.get("sides") or {}
    rows = []
    for side, settings in sides.items():
        figures = [f"{side}.{suffix}" for _, suffix, _ in columns]
        if not any(view.has(f) for f in figures):
            continue
        cells = [view.fmt(f, digits) for f, (_, _, digits) in zip(figures, columns, strict=True)]
        rows.append([side, settings, *cells])
    header = ["side", "settings", *(name for name, _, _ in columns)]
    return table(header, rows)


def peers_text(view: View, sides: tuple[str, ...], suffix: str, unit: str) -> str:
    """`side: median [min-max] unit` for each of `sides` that has the figure."""
    return "; ".join(
        f"{side}: {view.fmt(f'{side}.{suffix}')} {unit}".rstrip()
        for side in sides
        if view.has(f"{side}.{suffix}")
    )
