"""Memory: peak RSS of the real roles draining a 1,000,000-event backlog.

1. ``events`` (default 1,000,000) bench events (~420 bytes) are written to ``events.raw``.
2. ``router process`` drains them into the 5 destination topics (fresh dedup store).
3. Two delivery agents (``router deliver``) start together, each on a backlog
   already in its topic: one delivers ``amplitude`` (every event) to the sink in batches of
   100; the other serves ``mixpanel``, whose URL refuses connections for the whole backlog,
   so every event goes to its retry topic (and comes back when due).

Each role is its own process, sampled with psutil every 0.1 s. Bounded means the memory does
not follow the backlog: the figure is the peak RSS, the baseline the RSS once 10% of the
backlog was processed (the warmed-up working set), and the target peak <= 1.5x of it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.harness import (
    Result,
    RoleProcess,
    SinkProcess,
    fresh_broker,
    fresh_kafka,
    log,
    produce_backlog,
    scratch,
    write_yaml,
)
from bench.workload import DESTINATIONS, bench_workspace_data
from router.broker.embedded import free_port
from router.broker.topics import Topics, ensure_topics
from router.workspace import validate_workspace

MB = 1024 * 1024
HEALTHY, DOWN = "amplitude", "mixpanel"
DELIVERY = {"batch_size": 100, "concurrency": 8}


async def watch(
    role: RoleProcess,
    progress: Callable[[], Awaitable[float]],
    total: float,
    *,
    limit: float,
) -> dict[str, Any]:
    """Until ``progress()`` reaches ``total`` (or ``limit`` s): RSS against progress."""
    started = time.monotonic()
    curve: list[tuple[float, float]] = []  # (fraction done, RSS MB)
    done = 0.0
    while time.monotonic() - started < limit:
        done = await progress()
        if role.rss:
            curve.append((done / total, role.rss[-1][1] / MB))
        if done >= total:
            break
        await asyncio.sleep(0.25)
    elapsed = time.monotonic() - started
    if done < total:
        log(f"memory: {role.name} reached {done:.0f} of {total:.0f} in {limit:.0f}s")
    peak = max(rss for _, rss in role.rss) / MB if role.rss else float("nan")
    warm = next((rss for f, rss in curve if f >= 0.1), curve[-1][1] if curve else float("nan"))
    marks = {}
    for mark in (0.1, 0.25, 0.5, 0.75, 1.0):
        marks[f"{mark:.0%}"] = next((round(rss, 1) for f, rss in curve if f >= mark), None)
    return {
        "peak_mb": peak,
        "warm_mb": warm,
        "rss_at": marks,
        "seconds": elapsed,
        "done": done,
        "total": total,
        "events_per_s": done / elapsed if elapsed else 0.0,
    }


def row(label: str, stats: dict[str, Any]) -> Result:
    complete = stats["done"] >= stats["total"]
    return Result(
        label,
        stats["peak_mb"],
        stats["warm_mb"],
        unit="MB",
        target="<= 1.5x (bounded)",
        passed=complete and stats["peak_mb"] <= 1.5 * stats["warm_mb"],
        details=stats,
    )


async def run(quick: bool = False, events: int | None = None) -> list[Result]:
    count = events or (100_000 if quick else 1_000_000)
    limit = 120.0 if quick else 420.0
    with scratch("memory") as directory:
        async with fresh_broker() as broker:
            kafka = fresh_kafka(broker, "memory")
            topics = Topics(kafka.topic_prefix)
            sink = SinkProcess(directory)
            await sink.start()
            try:
                urls = {d: sink.url(f"/{d}") for d in DESTINATIONS}
                urls[DOWN] = f"http://127.0.0.1:{free_port()}/{DOWN}"  # nobody listens there
                data = bench_workspace_data(
                    kafka, f"{directory}/state", urls=urls, delivery=DELIVERY, plan=True
                )
                config = write_yaml(data, directory)
                await ensure_topics(kafka, topics.for_workspace(validate_workspace(data)))
                seconds = await produce_backlog(kafka, topics.raw, count, run="mem")
                log(f"memory: {count} events written in {seconds:.1f}s")

                processor = RoleProcess.processor(config, directory)
                await processor.start(sample_every=0.1)
                try:

                    async def processed() -> float:
                        return await processor.total("router_processor_received_total")

                    proc_stats = await watch(processor, processed, count, limit=limit)
                    routed = {
                        dest: await processor.total(
                            "router_processor_routed_total", destination=dest
                        )
                        for dest in (HEALTHY, DOWN)
                    }
                finally:
                    await processor.close()
                log(
                    f"memory: processor peak {proc_stats['peak_mb']:.0f} MB "
                    f"({proc_stats['events_per_s']:.0f} events/s); routed {routed}"
                )

                healthy = RoleProcess.agent(config, [HEALTHY], directory, name="agent-healthy")
                down = RoleProcess.agent(config, [DOWN], directory, name="agent-down")
                await asyncio.gather(healthy.start(sample_every=0.1), down.start(sample_every=0.1))
                try:

                    async def delivered() -> float:
                        return await healthy.total(
                            "router_delivery_delivered_total", destination=HEALTHY
                        )

                    async def failed_over() -> float:
                        # Fresh events whose outcome (a retry record) is written.
                        values = await down.metrics()
                        got = in_flight = 0.0
                        for (name, labels), value in values.items():
                            tags = dict(labels)
                            if (
                                name == "router_delivery_received_total"
                                and tags.get("origin") == "fresh"
                            ):
                                got = value
                            elif name == "router_delivery_in_flight_events":
                                in_flight = value
                        return got - in_flight

                    agent_stats, down_stats = await asyncio.gather(
                        watch(healthy, delivered, routed[HEALTHY], limit=limit),
                        watch(down, failed_over, routed[DOWN], limit=limit),
                    )
                finally:
                    await asyncio.gather(healthy.close(), down.close())
            finally:
                await sink.close()
    for name, stats in (("agent", agent_stats), ("agent (down)", down_stats)):
        log(
            f"memory: {name} peak {stats['peak_mb']:.0f} MB "
            f"({stats['events_per_s']:.0f} events/s over {stats['seconds']:.0f}s)"
        )
    backlog = f"{count // 1000}k" if count < 1_000_000 else f"{count / 1e6:g}M"
    return [
        row(f"memory: processor peak RSS, {backlog} backlog", proc_stats),
        row(f"memory: agent peak RSS, {backlog} backlog delivered", agent_stats),
        row("memory: agent peak RSS, destination down for the backlog", down_stats),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    args = parser.parse_args()
    for result in asyncio.run(run(args.quick, args.events)):
        print(orjson.dumps(result.as_dict()).decode())


if __name__ == "__main__":
    main()
