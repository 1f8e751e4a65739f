"""Isolation: one of 5 destinations slow (2 s per request), then failing (503 only).

Same production-like router as the latency figure (:mod:`bench.e2e`: processor and one agent
for all 5 destinations, own processes), written to at 20% of the measured end-to-end maximum
for the same time in every phase, each phase on a fresh broker and router (so no phase pays
for what an earlier one left in the broker), alternating baseline and degraded:

1. all healthy;
2. ``amplitude`` (the destination that receives every event) answers after 2 s;
3. all healthy again;
4. ``amplitude`` answers 503 to everything (its events cycle through its retry topic).

Each phase measures write -> arrival P95 of the 4 healthy destinations. Baseline = mean of
the two healthy phases; target: the slow and the failing phase at most 1.2x of it.
"""

from __future__ import annotations

import statistics

from bench.e2e import MEASURED, measure_max, phase, running_router
from bench.harness import Result, log, standalone, summary_ms

BAD = "amplitude"


async def run(quick: bool = False) -> list[Result]:
    seconds = 4.0 if quick else 10.0
    p95: dict[str, float] = {}
    details: dict[str, object] = {}
    maximum = MEASURED.get("e2e_max")
    if maximum is None:
        async with running_router("isolation-max") as router:
            maximum = await measure_max(router, 15_000 if quick else 40_000)
        MEASURED["e2e_max"] = maximum
    rate = 0.2 * maximum
    phases: tuple[tuple[str, dict[str, float]], ...] = (
        ("healthy", {}),
        ("slow", {"delay": 2.0}),
        ("healthy again", {}),
        ("failing", {"status": 503}),
    )
    for i, (name, behaviour) in enumerate(phases):
        async with running_router(f"isolation-{i}") as router:
            await router.sink.control({f"/{BAD}": behaviour})
            healthy = router.paths(exclude=[BAD])
            latencies, _hop, written = await phase(router, rate, seconds, f"iso{i}", paths=healthy)
            bad = (await router.sink.stats()).get(f"/{BAD}", {})
        summary = summary_ms(latencies)
        p95[name] = summary["p95_ms"]
        details[name] = {
            "written": written,
            "healthy": summary,
            "bad_requests": bad.get("requests", 0),
            "bad_events": bad.get("events", 0),
        }
        log(
            f"isolation {name}: healthy P95 {summary['p95_ms']:.1f} ms "
            f"({summary['count']} events), {BAD} answered {bad.get('requests', 0)} requests"
        )
    baseline = statistics.mean([p95["healthy"], p95["healthy again"]])
    common = {"rate": rate, "seconds": seconds, "bad": BAD, "phases": details}
    return [
        Result(
            f"isolation: healthy P95 while 1 of 5 is {label}",
            p95[name],
            baseline,
            unit="ms",
            target="<= 1.2x",
            passed=p95[name] <= 1.2 * baseline,
            details=common,
        )
        for name, label in (("slow", "2 s slow"), ("failing", "503 only"))
    ]


if __name__ == "__main__":
    standalone(run)
