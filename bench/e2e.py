"""The whole router as it runs in production, for the latency and isolation figures.

A fresh broker and topic prefix, the recording sink, ``router process`` and one delivery agent
(``router deliver``) for the 5 destinations of the bench workspace, each its own
process, warmed up until events reach every destination. Events are written to
``events.raw`` by this process with ``context.benchNs`` (the write time), so the sink
measures write -> arrival for every delivered event.

Every measured phase gets a router of its own: Tansu keeps topics in memory and gets slower
as they grow (at a constant 1,300 events/s, a plain consumer's one-hop P50 went from 15 ms to
100 ms over five 10 s phases on one broker, and the broker's CPU from 10% to 130%), so
phases on one broker would mostly measure how much earlier phases wrote.

``measure_max`` is the "measured maximum": a backlog drained end to end (processor + agent to
the fast sink), in raw events/s, first to last arrival at the sink.

Delivery uses ``E2E_DELIVERY`` (batches of up to 100, 8 requests in flight per destination):
a lane never waits to fill a batch, so batching adds no latency at low load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.harness import (
    RoleProcess,
    SinkProcess,
    Templates,
    fresh_broker,
    fresh_kafka,
    log,
    paced_write,
    produce_backlog,
    scratch,
    wait_until,
    write_yaml,
)
from bench.workload import DESTINATIONS, bench_workspace_data
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings
from router.workspace import validate_workspace

E2E_DELIVERY: dict[str, Any] = {"batch_size": 100, "concurrency": 8}

#: Measured maxima of this run, so a later figure (isolation) reuses the latency figure's.
MEASURED: dict[str, float] = {}


@dataclass
class Router:
    """A running router (processor + agent) delivering to ``sink``; see the module docstring."""

    kafka: KafkaSettings
    topics: Topics
    sink: SinkProcess
    processor: RoleProcess
    agent: RoleProcess
    templates: Templates = field(default_factory=lambda: Templates(stamp=True))
    written: int = 0
    _base: dict[str, float] = field(default_factory=dict)

    def paths(self, exclude: Sequence[str] = ()) -> list[str]:
        return [f"/{d}" for d in DESTINATIONS if d not in exclude]

    async def routed(self) -> float:
        return await self.processor.total("router_processor_routed_total")

    async def received(self) -> float:
        return await self.processor.total("router_processor_received_total")

    async def begin_phase(self) -> None:
        """Reset the sink's counters; remember what was routed so far per destination."""
        await self.sink.reset()
        self._base = await self._routed_by_path()

    async def _routed_by_path(self) -> dict[str, float]:
        values = await self.processor.metrics()
        return {
            f"/{dict(labels).get('destination', '')}": value
            for (name, labels), value in values.items()
            if name == "router_processor_routed_total"
        }

    async def settle(self, *, limit: float, paths: Sequence[str]) -> bool:
        """Wait until the processor took every written event and ``paths`` got all of theirs
        (as many as the processor routed to them since :meth:`begin_phase`)."""

        async def processed() -> bool:
            return await self.received() >= self.written

        if not await wait_until(processed, limit=limit, every=0.1, what="processor caught up"):
            return False
        routed = await self._routed_by_path()
        expected = {p: routed.get(p, 0.0) - self._base.get(p, 0.0) for p in paths}

        async def delivered() -> bool:
            stats = await self.sink.stats()
            return all(stats.get(p, {}).get("events", 0) >= n for p, n in expected.items())

        return await wait_until(delivered, limit=limit, every=0.1, what="sink caught up")

    async def warm_up(self, *, limit: float = 60.0) -> None:
        """Until events reach every destination: consumer groups joined, connections open.

        A role is ready before its consumer group has assigned it partitions (a join takes
        seconds on Tansu); without this the first phase would measure the join.
        """
        await self.begin_phase()
        await self.paced(200, 1.0, "warm")
        if not await self.settle(limit=limit, paths=self.paths()):
            raise TimeoutError("the router did not deliver its warm-up events")

    async def paced(self, rate: float, seconds: float, run: str) -> int:
        count = await paced_write(
            self.kafka,
            self.topics.raw,
            rate=rate,
            seconds=seconds,
            templates=self.templates,
            run=run,
        )
        self.written += count
        return count

    async def latencies(self, paths: Sequence[str]) -> list[int]:
        stats = await self.sink.stats()
        out: list[int] = []
        for path in paths:
            out.extend(stats.get(path, {}).get("latencies_us", []))
        return out


@contextlib.asynccontextmanager
async def running_router(figure: str) -> AsyncIterator[Router]:
    """Broker, sink, processor and agent processes for one figure; all stopped on exit."""
    with scratch(figure) as directory:
        async with fresh_broker() as broker:
            kafka = fresh_kafka(broker, figure)
            topics = Topics(kafka.topic_prefix)
            sink = SinkProcess(directory)
            await sink.start()
            processor: RoleProcess | None = None
            agent: RoleProcess | None = None
            try:
                data = bench_workspace_data(
                    kafka,
                    f"{directory}/state",
                    urls={d: sink.url(f"/{d}") for d in DESTINATIONS},
                    delivery=E2E_DELIVERY,
                    plan=True,
                    poll_timeout="200ms",
                )
                config = write_yaml(data, directory)
                await ensure_topics(kafka, topics.for_workspace(validate_workspace(data)))
                processor = RoleProcess.processor(config, directory)
                agent = RoleProcess.agent(config, DESTINATIONS, directory, name="agent")
                await asyncio.gather(processor.start(), agent.start())
                router = Router(kafka, topics, sink, processor, agent)
                await router.warm_up()
                yield router
            finally:
                for role in (agent, processor):
                    if role is not None:
                        await role.close()
                await sink.close()


async def measure_max(router: Router, events: int, *, limit: float = 180.0) -> float:
    """Drain a backlog of ``events`` end to end; raw events/s, first to last sink arrival."""
    await router.begin_phase()
    seconds = await produce_backlog(
        router.kafka, router.topics.raw, events, templates=router.templates, run="max"
    )
    router.written += events
    log(f"e2e: backlog of {events} written in {seconds:.1f}s")
    if not await router.settle(limit=limit, paths=router.paths()):
        raise TimeoutError("the backlog was not delivered in time")
    stats = await router.sink.stats()
    first = min(int(s["first_ns"]) for s in stats.values() if s["first_ns"])
    last = max(int(s["last_ns"]) for s in stats.values())
    return events / ((last - first) / 1e9)


class HopProbe:
    """The baseline for latency: one Kafka hop (write -> a plain consumer of events.raw).

    Every Kafka-based router pays this at least twice (events.raw, then dest.<id>); it is
    measured during the same phase, on the same records, by a consumer in this process. Its
    ``fetch_max_wait_ms`` is 10: Tansu holds a fetch that found nothing for the whole wait
    (Kafka answers when a record arrives), so the wait, not the broker, would set the hop.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.samples: list[int] = []
        self.since_ns = time.time_ns()  # records written before the phase are not its own
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            self.router.topics.raw,
            bootstrap_servers=self.router.kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,  # see the class docstring
        )
        await consumer.start()
        await consumer.seek_to_end()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        marker = b'"benchNs":'
        while True:
            polled = await self._consumer.getmany(timeout_ms=100)
            now = time.time_ns()
            for records in polled.values():
                for record in records:
                    value = record.value or b""
                    at = value.find(marker)
                    if at >= 0:
                        start = at + len(marker)
                        written = int(value[start : start + 19])
                        if written >= self.since_ns:
                            self.samples.append((now - written) // 1000)

    async def stop(self) -> list[int]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        return self.samples


async def phase(
    router: Router, rate: float, seconds: float, run: str, *, paths: Sequence[str]
) -> tuple[list[int], list[int], int]:
    """Write at ``rate`` for ``seconds``; (sink latencies on ``paths``, one-hop latencies, n)."""
    await router.begin_phase()
    probe = HopProbe(router)
    await probe.start()
    try:
        written = await router.paced(rate, seconds, run)
        await router.settle(limit=60, paths=paths)
    finally:
        hop = await probe.stop()
    return await router.latencies(paths), hop, written
