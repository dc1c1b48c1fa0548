"""`make bench`: run every bench script that contributes to the README's table, print the rows, rewrite the table.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--no-readme]

A bench script joins the table by defining TABLE_ORDER and measure(*, quick) -> list[Row] (see bench/table.py).
Each script runs in its own process, so one bench's Django settings, database and threads never leak into the
next one's figures.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.table import Row, rewrite_readme  # noqa: E402


def contributors() -> list[tuple[int, str]]:
    """(TABLE_ORDER, module name) of every bench script defining both TABLE_ORDER and measure, without importing."""
    found = []
    for path in sorted(BENCH.glob("*.py")):
        tree = ast.parse(path.read_text())
        order = None
        has_measure = False
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "TABLE_ORDER" for t in node.targets):
                order = ast.literal_eval(node.value)
            if isinstance(node, ast.FunctionDef) and node.name == "measure":
                has_measure = True
        if order is not None and has_measure:
            found.append((order, path.stem))
    return sorted(found)


def run_one(name: str, *, quick: bool) -> list[Row]:
    code = (
        "import json, sys; from dataclasses import asdict; "
        f"sys.path.insert(0, {str(BENCH.parent)!r}); "
        f"from bench import {name} as m; "
        f"print('BENCH-ROWS ' + json.dumps([asdict(r) for r in m.measure(quick={quick!r})]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=BENCH.parent, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-ROWS "):
            return [Row(**r) for r in json.loads(line[len("BENCH-ROWS ") :])]
        print(f"  {name}: {line}")
    raise SystemExit(f"bench/{name}.py failed (exit {proc.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one repetition (a smoke run)")
    parser.add_argument("--only", nargs="+", default=[], help="bench module names to run")
    parser.add_argument("--no-readme", action="store_true", help="print the rows, leave README.md alone")
    args = parser.parse_args()

    rows: list[Row] = []
    for _order, name in contributors():
        if args.only and name not in args.only:
            continue
        print(f"== bench/{name}.py", flush=True)
        started = time.monotonic()
        got = run_one(name, quick=args.quick)
        for row in got:
            print(f"  {row.what}: {row.figure} | beside: {row.beside} | {row.settings}", flush=True)
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
        rows += got
    if not args.no_readme and not args.only and not args.quick:
        rewrite_readme(rows, when=time.strftime("%Y-%m-%d"))
        print("README.md table rewritten")
    print(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
