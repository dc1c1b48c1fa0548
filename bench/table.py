"""The README's performance table: one row per figure, written by `make bench` (bench/run.py).

Each bench script that belongs in the table exposes

    TABLE_ORDER = 10                      # where its rows go (ascending)
    def measure(*, quick: bool) -> list[Row]: ...

`quick` asks for fewer repetitions and smaller inputs (used by the test that keeps the benches runnable); the
figures published in the README come from a full run. A Row says what was measured, the figure, what was measured
beside it in the same run (the baseline the figure is read against), and the settings it used.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- bench:start (written by `make bench`; edits inside are overwritten) -->"
END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Row:
    what: str
    figure: str
    beside: str
    settings: str = ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def machine() -> str:
    import os

    return f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, {platform.system()}"


def render(rows: list[Row], *, when: str) -> str:
    lines = [
        START,
        f"Measured by `make bench` on {when}: {machine()}. Ratios are what count; absolute figures drift with the",
        "machine and its load.",
        "",
        "| what | figure | beside it, same run | settings |",
        "|---|---|---|---|",
    ]
    lines += [f"| {_cell(r.what)} | {_cell(r.figure)} | {_cell(r.beside)} | {_cell(r.settings)} |" for r in rows]
    lines.append(END)
    return "\n".join(lines)


def rewrite_readme(rows: list[Row], *, when: str, readme: Path = README) -> None:
    """Replace the text between the markers (appended under a heading when they are missing)."""
    text = readme.read_text()
    table = render(rows, when=when)
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: table, text)
    else:
        text = text.rstrip("\n") + "\n\n## Performance\n\n" + table + "\n"
    readme.write_text(text)
