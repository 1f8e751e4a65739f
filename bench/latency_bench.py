"""End-to-end latency: write to ``events.raw`` -> arrival at the sink, at 20% and 80% load.

The router runs as in production (:mod:`bench.e2e`: ``router process`` and one delivery agent
for the 5 destinations, each its own process, plus the sink). First the measured maximum:
a backlog drained end to end. Then, each on a fresh broker and router, events are written at
a fixed rate (open loop, 5 ms ticks) for a bounded time at 20% and at 80% of that maximum;
the sink records ``arrival - write`` for every delivered event (all destinations together).
Baseline: one Kafka hop (write -> a plain consumer of ``events.raw``), measured on the same
records during the same phase; a router built on Kafka pays at least two such hops. Targets:
the router's P95 at most 2.2x the one-hop P95 at 20% load, at most 3x at 80%.
"""

from __future__ import annotations

from typing import Any

from bench.e2e import MEASURED, measure_max, phase, running_router
from bench.harness import Result, log, standalone, summary_ms

# load -> the P95 bound as a multiple of the one-hop P95 measured in the same phase
TARGETS = {0.2: 2.2, 0.8: 3.0}


async def run(quick: bool = False) -> list[Result]:
    backlog, seconds = (15_000, 4.0) if quick else (60_000, 12.0)
    rows: list[Result] = []
    async with running_router("latency-max") as router:
        maximum = await measure_max(router, backlog)
    MEASURED["e2e_max"] = maximum
    log(f"latency: measured maximum {maximum:.0f} events/s end to end")
    rows.append(
        Result(
            "end-to-end max throughput (processor+agent)",
            maximum,
            None,
            unit="events/s",
            target="report",
            passed=None,
            details={"backlog": backlog, "destinations": 5},
        )
    )
    for load, target in TARGETS.items():
        rate = maximum * load
        async with running_router(f"latency-{int(load * 100)}") as router:
            latencies, hop, written = await phase(
                router, rate, seconds, f"l{int(load * 100)}", paths=router.paths()
            )
            ours = summary_ms(latencies)
            base = summary_ms(hop)
            log(
                f"latency at {load:.0%} ({rate:.0f}/s, {written} events): "
                f"P50 {ours['p50_ms']:.1f} P95 {ours['p95_ms']:.1f} P99 {ours['p99_ms']:.1f} ms; "
                f"one hop P95 {base['p95_ms']:.1f} ms"
            )
            details: dict[str, Any] = {
                "rate": rate,
                "seconds": seconds,
                "written": written,
                "ours": ours,
                "one_kafka_hop": base,
            }
            for q in ("p50", "p95", "p99"):
                bound = target if q == "p95" else None
                rows.append(
                    Result(
                        f"e2e latency {q.upper()} at {load:.0%} load",
                        ours[f"{q}_ms"],
                        base[f"{q}_ms"],
                        unit="ms",
                        target=f"<= {bound:g}x" if bound else "report",
                        passed=(ours[f"{q}_ms"] <= bound * base[f"{q}_ms"]) if bound else None,
                        details=details,
                    )
                )
    return rows


if __name__ == "__main__":
    standalone(run)
