"""Run every benchmark and print the table: ``python -m bench``.

    python -m bench [--quick] [--only NAME[,NAME]] [--out FILE] [--memory-events N]

Figures, in order (each its own module, broker and topic prefix): processor, delivery,
latency, isolation, gateway, memory, warehouse (its own PostgreSQL cluster, no broker),
lifecycle (``router run`` start and stop, absolute targets).
Each figure is a ratio to a baseline measured in the same run on the same broker. The
table goes to stdout; progress to stderr; the JSON (figure, ours, baseline, ratio, target,
pass, unit, details) to ``--out`` (default ``bench/results/<timestamp>.json``). A missed
target is reported, not an error: the exit status is 1 only when a figure could not be
measured.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench import (
    delivery_bench,
    gateway_bench,
    isolation_bench,
    latency_bench,
    lifecycle_bench,
    memory_bench,
    processor_bench,
    warehouse_bench,
)
from bench.harness import ROOT, Result, log

FIGURES: dict[str, Callable[[argparse.Namespace], Awaitable[list[Result]]]] = {
    "processor": lambda a: processor_bench.run(a.quick),
    "delivery": lambda a: delivery_bench.run(a.quick),
    "latency": lambda a: latency_bench.run(a.quick),
    "isolation": lambda a: isolation_bench.run(a.quick),
    "gateway": lambda a: gateway_bench.run(a.quick),
    "memory": lambda a: memory_bench.run(a.quick, a.memory_events),
    "warehouse": lambda a: warehouse_bench.run(a.quick),
    "lifecycle": lambda a: lifecycle_bench.run(a.quick),
}


def _number(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:,.0f}/s" if unit == "events/s" else f"{value:.3g} {unit}"


def table(results: list[Result]) -> str:
    header = ("figure", "ours", "baseline", "ratio", "target", "pass")
    rows = [
        (
            r.figure,
            _number(r.ours, r.unit),
            _number(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            {True: "yes", False: "NO", None: "-"}[r.passed],
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in (header, *rows)
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


async def run_all(args: argparse.Namespace, names: list[str]) -> tuple[list[Result], list[str]]:
    results: list[Result] = []
    failed: list[str] = []
    for name in names:
        started = time.monotonic()
        log(f"== {name}")
        try:
            rows = await FIGURES[name](args)
        except Exception as exc:
            traceback.print_exc()
            failed.append(name)
            rows = [
                Result(
                    f"{name}: could not be measured",
                    math.nan,
                    None,
                    unit="",
                    target="",
                    passed=False,
                    details={"error": repr(exc)},
                )
            ]
        for row in rows:
            row.details.setdefault("figure_seconds", round(time.monotonic() - started, 1))
        results.extend(rows)
        log(f"== {name} done in {time.monotonic() - started:.0f}s")
    return results, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (1-2 minutes)")
    parser.add_argument(
        "--only", action="append", default=[], help=f"figures to run: {', '.join(FIGURES)}"
    )
    parser.add_argument("--out", help="JSON results file (default bench/results/<time>.json)")
    parser.add_argument(
        "--memory-events", type=int, default=None, help="backlog size (default 1,000,000)"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(unknown)}")

    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results, failed = asyncio.run(run_all(args, names))
    elapsed = time.monotonic() - started

    print(table(results))
    print(
        f"\n{len(results)} figures in {elapsed / 60:.1f} min ({'quick' if args.quick else 'full'})"
    )
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "started": stamp,
        "seconds": round(elapsed, 1),
        "quick": args.quick,
        "figures": names,
        "memory_events": args.memory_events or (100_000 if args.quick else 1_000_000),
        "commit": _commit(),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": [r.as_dict() for r in results],
    }
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
