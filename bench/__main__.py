"""``python -m bench [--only NAME] [--quick] [--soak [--soak-minutes N]]``: run
the benchmarks, print one table, write it to ``bench/results/<UTC timestamp>.json``.

Exit status 0 when every target is met, 1 when one is missed or a benchmark
crashed, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
import traceback
from datetime import UTC, datetime

from bench import BENCHMARKS, ON_REQUEST
from bench.measure import Row
from bench.report import table, write_json
from bench.servers import close_workspace


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short rounds: a smoke run, not figures"
    )
    parser.add_argument(
        "--no-save", action="store_true", help="do not write bench/results/*.json"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument(
        "--soak",
        action="store_true",
        help=f"also run the soak test ({', '.join(ON_REQUEST)}; not run by default)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=None,
        metavar="N",
        help="how long the soak test runs (default 10; 0.5 with --quick)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only or [] for n in item.split(",")]
    known = (*BENCHMARKS, *ON_REQUEST)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {known}")
    if args.soak_minutes is not None and not 0 < args.soak_minutes <= 24 * 60:
        parser.error("--soak-minutes must be more than 0 and at most a day")
    if args.soak and not names:
        names = list(known)
    elif args.soak:
        names.extend(ON_REQUEST)
    args.names = [n for n in known if n in names] if names else list(BENCHMARKS)
    return args


def title(module: object) -> str:
    first = ((module.__doc__ or "").strip().splitlines() or [""])[0]
    return first.replace("``", "")


def run_one(name: str, quick: bool) -> list[Row]:
    """Run ``bench.<name>``; a crash becomes an ERROR row, not the end of the run."""
    module = importlib.import_module(f"bench.{name}")
    print(f"== {name}: {title(module)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        rows = module.run(quick)
    except Exception as exc:
        traceback.print_exc()
        rows = [
            Row(
                f"crashed: {type(exc).__name__}: {exc}".splitlines()[0][:120],
                math.nan,
                "",
                errors=1,
            )
        ]
    for row in rows:
        row.benchmark = name
    print(table(rows, notes=False), file=sys.stderr)
    print(f"   ({time.monotonic() - started:.0f} s)\n", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in (*BENCHMARKS, *ON_REQUEST):
            module = importlib.import_module(f"bench.{name}")
            print(f"{name:12} {title(module)}")
        return 0
    if "soak" in args.names:
        soak = importlib.import_module("bench.soak")
        soak.MINUTES = args.soak_minutes or (0.5 if args.quick else soak.MINUTES)
    started = datetime.now(UTC)
    rows: list[Row] = []
    try:
        for name in args.names:
            rows += run_one(name, args.quick)
    finally:
        close_workspace()
    finished = datetime.now(UTC)
    heading = "chatauth benchmarks" + (" (--quick: smoke run)" if args.quick else "")
    print(f"\n{heading}, {started:%Y-%m-%d %H:%M} UTC\n")
    print(table(rows))
    if not args.no_save:
        path = write_json(rows, started=started, finished=finished, quick=args.quick)
        print(f"\nwritten to {path}")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
