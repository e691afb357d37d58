"""Tables: printed with rich, and the same rows as Markdown for the README."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table


@dataclass
class Tab:
    """A titled table of strings, renderable to the terminal and to Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def print(self, console: Console) -> None:
        t = Table(title=self.title, title_justify="left", header_style="bold")
        for i, h in enumerate(self.headers):
            t.add_column(h, justify="left" if i < 2 else "right")
        for r in self.rows:
            t.add_row(*r)
        console.print(t)
        for n in self.notes:
            console.print(f"  {n}", style="dim", highlight=False)
        console.print()

    def markdown(self) -> str:
        lines = [f"#### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append(
            "|" + "|".join("---" if i < 2 else "---:" for i in range(len(self.headers))) + "|"
        )
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def num(x: float) -> str:
    """Throughput-style number: no decimals past 100, else 3 significant figures."""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"
