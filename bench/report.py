"""Build `bench/RESULTS.md` (and its charts, and the README's benchmark table) from the
benchmarks' JSON files in `bench/results/`, and from nothing else.

    .venv/bin/python -m bench.report [--results DIR] [--out DIR] [--no-charts] [--no-readme]

Every sentence with a number is derived from a JSON file (see `bench/common.Recorder` for
its shape): a figure is the median of its per-repetition values with [min-max] when it has
at least three, and otherwise says how many it has. A target is judged on the worst
repetition (the lowest value of a figure where higher is better, the highest of one where
lower is better): **met** when the worst clears it, **within noise** when only the median
does, **missed** otherwise. A quick run's figures are shown but never judged.

Each section says which commit, tree and machine state its own JSON recorded, so sections
run at different commits say so. Prose that is not derived (profiles, reasons) lives in
dated files in `bench/notes/`, which the report links to and never pastes.

What a section shows is registered in `bench/sections/<name>.py` (a module-level `SECTION`,
found by `sections()`); a JSON file without a registered section still gets a generic one
listing its figures. The text of RESULTS.md depends only on the JSON files, the registered
sections and the names of the notes files, so rebuilding it gives the same bytes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import operator
import os
import pkgutil
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NOTES = ROOT / "bench" / "notes"
README = ROOT / "README.md"
README_START = "<!-- bench-summary:start (bench/report.py writes this table) -->"
README_END = "<!-- bench-summary:end -->"
OUTCOMES = ("met", "within noise", "missed")
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
NOT_JUDGED_QUICK = "not judged (quick run)"
NOT_MEASURED = "not measured"

log = logging.getLogger("bench.report")


# ---------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Stat:
    """One figure of a JSON file: its repetitions' values and how to show them."""

    label: str
    unit: str
    better: str | None
    values: tuple[float, ...]
    digits: int | None = None
    basis: str | None = None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Stat | None:
        values = tuple(float(v) for v in entry.get("values", []) if v is not None)
        if not values:
            return None
        return cls(
            label=entry.get("label", ""),
            unit=entry.get("unit", ""),
            better=entry.get("better"),
            values=values,
            digits=entry.get("digits"),
            basis=entry.get("basis"),
        )

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def places(self) -> int:
        """Decimal places: the figure's own `digits`, else by the median's magnitude."""
        if self.digits is not None:
            return self.digits
        size = abs(self.median)
        return 0 if size >= 100 else 1 if size >= 10 else 2

    def number(self, value: float, digits: int | None = None) -> str:
        return f"{value:.{self.places() if digits is None else digits}f}"

    def text(self, digits: int | None = None) -> str:
        """`median [min-max]`, or the value with its basis, or with its repetition count."""
        median = self.number(self.median, digits)
        span = f"{self.number(self.min, digits)}-{self.number(self.max, digits)}"
        if self.basis:
            return f"{median} ({self.basis})"
        if self.n >= 3:
            return f"{median} [{span}]"
        if self.n == 1:
            return f"{median} (1 repetition)"
        return f"{median} [{span}] ({self.n} repetitions)"


# ---------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A goal on one figure: `figure op threshold`, judged on the figure's worst repetition.

    `threshold` is a number, or a function of the JSON file that returns one (e.g. from
    the setting the run used), or None when the file lacks what it needs. `goal` is prose
    without numbers: the threshold is shown beside it.
    """

    figure: str
    op: str
    threshold: float | Callable[[dict[str, Any]], float | None]
    goal: str

    def resolve(self, data: dict[str, Any]) -> float | None:
        if callable(self.threshold):
            try:
                return self.threshold(data)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                return None
        return float(self.threshold)


def judge(stat: Stat, op: str, threshold: float) -> str:
    """ "met" when the worst repetition clears the threshold, "within noise" when only the
    median does, "missed" otherwise. Worst: the lowest value for `>`/`>=` targets (a
    throughput, a ratio), the highest for `<`/`<=` ones (a latency, a memory figure)."""
    passes = OPS[op]
    worst = stat.min if op in (">", ">=") else stat.max
    if passes(worst, threshold):
        return "met"
    if passes(stat.median, threshold):
        return "within noise"
    return "missed"


@dataclass(frozen=True)
class Verdict:
    """A target judged against one JSON file."""

    target: Target
    stat: Stat | None
    threshold: float | None
    outcome: str

    def text(self) -> str:
        goal = self.target.goal
        if self.stat is None or self.threshold is None:
            return f"{goal}: **{self.outcome}**"
        worst = self.stat.min if self.target.op in (">", ">=") else self.stat.max
        return (
            f"{goal}: {self.stat.label} {self.stat.text()}, worst repetition "
            f"{self.stat.number(worst)} {self.target.op} {self.threshold:g}: **{self.outcome}**"
        )


def overall(verdicts: list[Verdict]) -> str:
    """The worst outcome of several verdicts (missed, then within noise, then met)."""
    outcomes = {v.outcome for v in verdicts}
    for outcome in (NOT_JUDGED_QUICK, NOT_MEASURED, "missed", "within noise", "met"):
        if outcome in outcomes:
            return outcome
    return "reported"


# ---------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SummaryRow:
    """A section's row in the summary table (and the README's)."""

    what: str
    ours: str
    peers: str = ""


@dataclass(frozen=True)
class Panel:
    """One bar chart panel: the median of each figure, whiskers min-max."""

    ylabel: str
    figures: tuple[str, ...]
    log_scale: bool = False
    line: float | None = None


@dataclass(frozen=True)
class Section:
    """What the report shows of one benchmark's JSON file (`results/<name>.json`).

    `summary` gives its row of the summary table, `body` the lines of its section (tables,
    settings); both read the file only through a `View`. `targets` (or a function of the
    view giving them, when they depend on what the run measured) are judged by the report
    itself. `charts` gives the panels of `charts/<name>.png`.
    """

    name: str
    title: str
    source: str
    order: int
    summary: Callable[[View], SummaryRow] | None = None
    body: Callable[[View], list[str]] | None = None
    targets: tuple[Target, ...] | Callable[[View], tuple[Target, ...]] = ()
    charts: Callable[[View], list[Panel]] | None = None

    def targets_for(self, view: View) -> tuple[Target, ...]:
        return self.targets(view) if callable(self.targets) else self.targets


@dataclass
class View:
    """One JSON file, as a section renderer reads it."""

    name: str
    data: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        return self.data.get("settings") or {}

    @property
    def quick(self) -> bool:
        return bool(self.data.get("quick"))

    def stat(self, figure_id: str) -> Stat | None:
        entry = (self.data.get("figures") or {}).get(figure_id)
        return Stat.of(entry) if entry else None

    def has(self, figure_id: str) -> bool:
        return self.stat(figure_id) is not None

    def fmt(self, figure_id: str, digits: int | None = None) -> str:
        """The figure as `median [min-max]` (or with its repetition count), or "-"."""
        stat = self.stat(figure_id)
        return stat.text(digits) if stat else "-"

    def verdicts(self, targets: tuple[Target, ...]) -> list[Verdict]:
        found = []
        for target in targets:
            stat = self.stat(target.figure)
            threshold = target.resolve(self.data)
            if self.quick:
                outcome = NOT_JUDGED_QUICK
            elif stat is None or threshold is None:
                outcome = NOT_MEASURED
            else:
                outcome = judge(stat, target.op, threshold)
            found.append(Verdict(target, stat, threshold, outcome))
        return found


def sections() -> dict[str, Section]:
    """Every registered section: the `SECTION` of each module in `bench/sections/`."""
    import bench.sections as package

    found: dict[str, Section] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        section = getattr(module, "SECTION", None)
        if isinstance(section, Section):
            found[section.name] = section
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def generic(name: str) -> Section:
    """The section of a JSON file nobody registered: its figures, no targets."""
    return Section(name=name, title=name.replace("_", " "), source=f"bench/{name}.py", order=999)


# ---------------------------------------------------------------------- text helpers


def when(iso: str | None) -> str:
    """`2026-12-02T10:00:05+00:00` as `2026-12-02 10:00`."""
    return iso[:16].replace("T", " ") if iso else "?"


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A Markdown table; `align` gives one character per column (`l` or `r`)."""
    marks = [("---:" if a == "r" else "---") for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def versions_text(versions: dict[str, Any]) -> str:
    """`a 1.0, b 2.0`, or per side `ours: ...; celery: ...`."""
    if not versions:
        return "-"
    if all(isinstance(v, dict) or v is None for v in versions.values()):
        return "; ".join(
            f"{side}: {versions_text(found)}" for side, found in versions.items() if found
        )
    return ", ".join(f"{name} {found}" for name, found in versions.items() if found)


def git_text(git: dict[str, Any] | None) -> str:
    if not git:
        return "an unrecorded commit"
    tree = "clean tree"
    if git.get("dirty"):
        paths = git.get("dirty_paths") or []
        shown = ", ".join(f"`{p}`" for p in paths[:5]) + (", and more" if len(paths) > 5 else "")
        tree = f"uncommitted changes: {shown}" if shown else "uncommitted changes"
    return f"commit `{git.get('short') or git.get('commit', '?')[:7]}` ({tree})"


def loadavg(machine: dict[str, Any], end: str) -> str:
    state = machine.get(end) or {}
    values = state.get("loadavg") or []
    return f"{values[0]:.2f}" if values else "?"


def provenance(data: dict[str, Any]) -> str:
    """Where one JSON file's figures come from: commit, tree, time, machine, command."""
    machine = data.get("machine") or {}
    start = machine.get("start") or {}
    end_git = data.get("git_at_end") or {}
    moved = (
        f" The checkout was at {git_text(end_git)} when it ended."
        if end_git and end_git.get("commit") != (data.get("git") or {}).get("commit")
        else ""
    )
    command = " ".join(data.get("command") or [])
    return (
        f"Measured at {git_text(data.get('git'))} from {when(data.get('started_at'))} to "
        f"{when(data.get('finished_at')) if data.get('finished_at') else '(not finished)'} UTC, "
        f"on {start.get('cpus', '?')} CPUs with a load average of {loadavg(machine, 'start')} "
        f"at the start and {loadavg(machine, 'end')} at the end.{moved}"
        + (f" Command: `{command}`." if command else "")
    )


def status(data: dict[str, Any]) -> str:
    if data.get("quick"):
        return "quick run"
    return "complete" if data.get("complete") else "incomplete"


# ---------------------------------------------------------------------- building


@dataclass
class Built:
    """The report's Markdown, its summary rows and the charts to draw."""

    markdown: str
    summary: list[list[str]]
    charts: list[tuple[str, str, list[Panel], View]] = field(default_factory=list)


def load(results: Path) -> dict[str, dict[str, Any]]:
    """Every `<name>.json` in `results` that has the benchmark shape, by name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")) if results.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if isinstance(data, dict) and "figures" in data and "benchmark" in data:
            found[path.stem] = data
    return found


def _link(target: Path, report_dir: Path) -> str:
    return Path(os.path.relpath(target, report_dir)).as_posix()


def summary_cells(section: Section, view: View | None) -> list[str]:
    """what | this service | side by side with | result, for one section."""
    if view is None:
        return [section.title, f"{NOT_MEASURED}: no result file `{section.name}.json`", "", ""]
    row = section.summary(view) if section.summary else SummaryRow(section.title, "", "")
    verdicts = view.verdicts(section.targets_for(view))
    if verdicts:
        result = f"**{overall(verdicts)}**: " + "; ".join(
            f"{v.target.goal} ({v.outcome})" for v in verdicts
        )
    else:
        result = "no target" + (" (quick run)" if view.quick else "")
    if not view.quick and not view.data.get("complete"):
        result += " (incomplete run)"
    return [row.what, row.ours, row.peers, result]


def section_lines(section: Section, view: View, chart_link: str | None) -> list[str]:
    lines = [f"## {section.title} (`{section.source}`)", "", provenance(view.data), ""]
    if view.quick:
        lines += [
            "**Quick run**: tiny sizes; its figures mean nothing and no target is judged.",
            "",
        ]
    elif not view.data.get("complete"):
        lines += ["**Incomplete**: the run stopped before its end; these are its figures so far."]
        lines += [""]
    if chart_link:
        lines += [f"![{section.name}]({chart_link})", ""]
    body = section.body(view) if section.body else figures_table(view)
    lines += [*body, ""]
    verdicts = view.verdicts(section.targets_for(view))
    if verdicts:
        lines += ["Targets (met: the worst repetition clears it; within noise: only the median):"]
        lines += [""]
        lines += [f"- {v.text()}" for v in verdicts] + [""]
    lines += [f"Versions: {versions_text(view.data.get('versions') or {})}.", ""]
    return lines


def figures_table(view: View) -> list[str]:
    """Every figure of the file: label, median [min-max] (or its count), unit."""
    rows = []
    for figure_id in view.data.get("figures") or {}:
        stat = view.stat(figure_id)
        if stat is not None:
            rows.append([stat.label or figure_id, stat.text(), stat.unit])
    return table(["figure", "median [min-max]", "unit"], rows) if rows else ["No figures."]


def build(results: Path, report_dir: Path, *, notes: Path = NOTES, quick: bool = False) -> Built:
    """The report of the JSON files in `results`, with links relative to `report_dir`."""
    files = load(results)
    registered = sections()
    order = list(registered) + [name for name in files if name not in registered]
    header = [
        "# Benchmark results" + (" (QUICK RUN: tiny sizes, figures mean nothing)" if quick else ""),
        "",
        f"Built by `python -m bench.report` from the JSON files in "
        f"[{_link(results, report_dir)}/]({_link(results, report_dir)}/) and nothing else; "
        "how each benchmark measures: [README.md]"
        f"({_link(ROOT / 'bench' / 'README.md', report_dir)}). A figure is the median of its "
        "repetitions with [min-max] when it has at least three; otherwise it says how many it "
        "has. A target is **met** when its worst repetition clears it (the lowest value of a "
        "throughput, the highest of a latency or a memory figure), **within noise** when only "
        "the median does, and **missed** otherwise.",
        "",
    ]
    note_files = sorted(notes.glob("*.md")) if notes.is_dir() else []
    if note_files:
        links = ", ".join(f"[{p.name}]({_link(p, report_dir)})" for p in note_files)
        header += [f"Notes written by hand, not derived from these results: {links}.", ""]
    runs = []
    for name in order:
        if name in files:
            data = files[name]
            link = _link(results / f"{name}.json", report_dir)
            runs.append(
                [f"[{name}]({link})", git_text(data.get("git")), when(data.get("started_at")),
                 when(data.get("finished_at")) if data.get("finished_at") else "-",
                 f"{loadavg(data.get('machine') or {}, 'start')} / "
                 f"{loadavg(data.get('machine') or {}, 'end')}",
                 str(((data.get("machine") or {}).get("start") or {}).get("cpus", "?")),
                 status(data)]
            )  # fmt: skip
    header += ["## Runs", ""]
    if runs:
        commits = {(files[n].get("git") or {}).get("commit") for n in order if n in files}
        header += table(
            ["results", "measured at", "started (UTC)", "finished (UTC)",
             "load average start / end", "CPUs", "status"], runs,
        )  # fmt: skip
        header += [""]
        if len(commits) > 1:
            header += [
                "The sections ran at different commits: each section names its own, and "
                "figures of different sections compare only with care.",
                "",
            ]
    else:
        header += ["No benchmark result file is committed yet.", ""]
    summary: list[list[str]] = []
    body: list[str] = []
    charts: list[tuple[str, str, list[Panel], View]] = []
    for name in order:
        section = registered.get(name) or generic(name)
        view = View(name, files[name]) if name in files else None
        summary.append(summary_cells(section, view))
        if view is None:
            continue
        panels = [p for p in (section.charts(view) if section.charts else []) if _any(view, p)]
        chart_link = None
        if panels:
            chart_link = _link(report_dir / "charts" / f"{name}.png", report_dir)
            charts.append((name, section.title, panels, view))
        body += section_lines(section, view, chart_link)
    summary_table = table(["what", "this service", "side by side with", "result"], summary)
    markdown = "\n".join([*header, "## Summary", "", *summary_table, "", *body]).rstrip() + "\n"
    return Built(markdown, summary, charts)


def _any(view: View, panel: Panel) -> bool:
    return any(view.has(f) for f in panel.figures)


def readme_block(built: Built, results_md: Path, readme: Path) -> str:
    """The README's benchmark table: the summary of the report, copied by the report."""
    link = _link(results_md, readme.parent)
    lines = [
        README_START,
        f"Copied by `python -m bench.report` from the summary of [{link}]({link}), which "
        "names the commit and the time of each run:",
        "",
        *table(["what", "longrun", "peers", "result"], built.summary),
        README_END,
    ]
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> bool:
    """Replace the block between the README's markers; False when it has none."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _m: block, text, count=1))
    return True


# ---------------------------------------------------------------------- charts


def draw(path: Path, title: str, panels: list[Panel], view: View) -> None:
    """One row of bar charts: each figure's median, whiskers min-max, a target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        stats = [(f, view.stat(f)) for f in panel.figures]
        shown = [(f, s) for f, s in stats if s is not None]
        labels = [s.label or f for f, s in shown]
        medians = [s.median for _, s in shown]
        low = [s.median - s.min for _, s in shown]
        high = [s.max - s.median for _, s in shown]
        colors = ["#2b6cb0" if i == 0 else "#a0aec0" for i in range(len(shown))]
        ax.bar(range(len(shown)), medians, yerr=[low, high], capsize=4, color=colors)
        ax.set_xticks(range(len(shown)), labels, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(panel.ylabel)
        if panel.log_scale:
            ax.set_yscale("log")
        for i, (_, stat) in enumerate(shown):
            ax.annotate(stat.number(stat.median), (i, stat.median), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 3), textcoords="offset points")  # fmt: skip
        if panel.line is not None:
            ax.axhline(panel.line, color="#c53030", linestyle="--", linewidth=1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} (median, whiskers min-max)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def draw_all(built: Built, report_dir: Path) -> list[Path]:
    """Draw every chart the report links to; without matplotlib, say so and draw none."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib is missing (the bench extra): charts not redrawn")
        return []
    drawn = []
    for name, title, panels, view in built.charts:
        path = report_dir / "charts" / f"{name}.png"
        draw(path, title, panels, view)
        drawn.append(path)
    return drawn


# ---------------------------------------------------------------------- entry points


def write(
    results: Path,
    report_dir: Path,
    *,
    quick: bool = False,
    charts: bool = True,
    readme: Path | None = None,
    notes: Path = NOTES,
) -> Path:
    """Write `report_dir/RESULTS.md` (and `report_dir/charts/*.png`) from `results`, and
    the README's table when `readme` is given. Returns the RESULTS.md path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    built = build(results, report_dir, notes=notes, quick=quick)
    path = report_dir / "RESULTS.md"
    path.write_text(built.markdown)
    if charts:
        draw_all(built, report_dir)
    if readme is not None and not update_readme(readme, readme_block(built, path, readme)):
        log.warning("%s has no benchmark table markers; not updated", readme)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where RESULTS.md goes")
    parser.add_argument("--no-charts", action="store_true", help="do not redraw the charts")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--quick", action="store_true", help="title it a quick run's report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    readme = None if args.no_readme or args.quick else README
    path = write(args.results, args.out, quick=args.quick, charts=not args.no_charts, readme=readme)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    # Run the module's own copy (`bench.report`, which the sections import), not `__main__`,
    # so the sections' `Section` is this module's.
    from bench.report import main as run

    sys.exit(run())
