"""SIGKILL, again and again, of the processor and of a delivery agent, mid-stream.

Both run as they do in production, ``router process`` and ``router deliver`` in processes of
their own; after each kill a new process is started at once (what an orchestrator does). The
stream never pauses: events keep arriving on ``events.raw`` throughout.

Duplicates, and their bound: a killed processor replays its uncommitted batches (at most the
one in flight and the one being written: two polls of events, here about 50); their dedup
keys may not be written yet, so the agent can deliver those twice. A killed agent's
successor redelivers what was delivered but not yet committed: at most a commit interval's
worth (0.5 s at 200 events/s here) plus the requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from router.broker.topics import topics_for
from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.faults.harness import (
    Feeder,
    RoleProcess,
    recovery,
    roles,
    settle,
    tally,
    webhook,
    write_workspace,
)

RATE = 200.0  # events per second, throughout
KILLS = 3


@pytest.mark.timeout(240)
@pytest.mark.parametrize("victim", ["processor", "agent"])
async def test_repeated_sigkill_mid_stream_loses_nothing(
    victim: str, fault_kafka: KafkaSettings, sink: Sink, tmp_path: Path
) -> None:
    kafka = fault_kafka
    bootstrap = kafka.bootstrap_servers or ""
    config = write_workspace(tmp_path / "workspace.yaml", kafka, [webhook("hook", sink.url)])
    processor = RoleProcess.router("processor", "process", config, bootstrap, tmp_path)
    agent = RoleProcess.router(
        "agent", "deliver", config, bootstrap, tmp_path, "--commit-interval", "0.5"
    )
    target = processor if victim == "processor" else agent
    recoveries: list[float] = []
    async with roles(processor, agent), Feeder(kafka, topics_for(kafka).raw, rate=RATE) as feed:
        for _ in range(KILLS):
            await asyncio.sleep(2.0)  # mid-stream: deliveries are flowing
            produced_before, killed_at = feed.produced, time.monotonic()
            await target.kill()
            await target.start()
            recoveries.append(await recovery(sink, killed_at, produced_before))
        await asyncio.sleep(1.0)
        await feed.stop()
        await settle(lambda: feed.acked, [sink], limit=60)
        await asyncio.sleep(1.0)  # a late duplicate would arrive now
        # SIGTERM after the storm: each survivor still stops cleanly.
        for role in (processor, agent):
            role.signal(15)
        codes = await asyncio.gather(processor.wait(), agent.wait())
    result = tally(
        f"{victim}-sigkill-x{KILLS}",
        feed.acked,
        sink,
        recovered=recoveries,
        note=f"{victim} killed {KILLS} times mid-stream at {RATE:.0f} events/s, restarted at once",
    )
    assert result.lost == 0, f"{processor.tail()}\n{agent.tail()}"
    assert codes == [0, 0], f"{processor.tail()}\n{agent.tail()}"
    bound = KILLS * (100 if victim == "processor" else int(RATE * 0.5) + 4 * 10)
    assert result.duplicated <= bound
