"""The bench's table (for people) and its JSON (for the README and for comparing runs)."""

from __future__ import annotations

import dataclasses
import statistics

from bench.launcher import Measure


@dataclasses.dataclass
class Row:
    name: str
    measure: Measure
    versus: str = ""  # the ratio column, already worded ("0.52x kubeadm")


@dataclasses.dataclass
class Section:
    title: str
    rows: list[Row]


def pair_ratio(ours: Measure, theirs: Measure) -> float:
    """Median of the per-pair ratios (run i of ours over run i of theirs, run back to back)."""
    return statistics.median(a / b for a, b in zip(ours.seconds, theirs.seconds, strict=True))


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def table(sections: list[Section]) -> str:
    header = ["", "median ms", "min-max ms", "1st line ms", "peak RSS", "ratio"]
    lines: list[list[str]] = []
    for section in sections:
        lines.append([section.title, "", "", "", "", ""])
        for row in section.rows:
            m = row.measure
            first = ms(statistics.median(m.first_line)) if m.first_line else ""
            rss = f"{max(m.rss_kib) / 1024:.0f} MiB" if m.rss_kib else ""
            spread = f"{ms(min(m.seconds))}-{ms(max(m.seconds))}"
            lines.append([f"  {row.name}", ms(m.median), spread, first, rss, row.versus])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    out = []
    for i, cells in enumerate([header, *lines]):
        text = [cells[0].ljust(widths[0])]
        text += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        out.append("  ".join(text).rstrip())
        if i == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)
