"""SIGTERM under load: nothing lost, nothing duplicated.

1. ``router process`` and ``router deliver`` get SIGTERM together while events stream in,
   exit 0, and are started again: a clean stop finishes or hands back what it holds, commits
   exactly what finished and leaves its groups, so the next processes continue where these
   stopped, with no event delivered twice.
2. ``router run`` on its embedded broker (in memory, gone when the process ends) gets SIGTERM
   while a producer writes to ``events.raw`` (stopping at the SIGTERM, with a backlog) and a
   client posts to its gateway: from then on the gateway answers 503 ``shutting_down``
   (clients retry), and before it exits the router delivers everything Kafka acknowledged and
   the gateway accepted.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson
import psutil
import pytest

from router.broker.embedded import free_port
from router.broker.topics import topics_for
from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.faults.harness import (
    ROUTER,
    Feeder,
    RoleProcess,
    SegmentLikeClient,
    recovery,
    roles,
    settle,
    tally,
    webhook,
    write_workspace,
)

RATE = 200.0


def _port(broker: psutil.Process) -> int:
    (listening,) = [c for c in broker.net_connections() if c.status == psutil.CONN_LISTEN]
    return int(listening.laddr.port)


@pytest.mark.timeout(180)
async def test_sigterm_under_load_then_restart_loses_and_repeats_nothing(
    fault_kafka: KafkaSettings, sink: Sink, tmp_path: Path
) -> None:
    kafka = fault_kafka
    bootstrap = kafka.bootstrap_servers or ""
    sink.slow(0.02)  # requests are in flight when SIGTERM lands
    config = write_workspace(tmp_path / "workspace.yaml", kafka, [webhook("hook", sink.url)])
    processor = RoleProcess.router("processor", "process", config, bootstrap, tmp_path)
    agent = RoleProcess.router("agent", "deliver", config, bootstrap, tmp_path)
    async with roles(processor, agent), Feeder(kafka, topics_for(kafka).raw, rate=RATE) as feed:
        await asyncio.sleep(3.0)
        stopped_at, produced_before = time.monotonic(), feed.produced
        for role in (processor, agent):
            role.signal(signal.SIGTERM)
        codes = await asyncio.gather(processor.wait(), agent.wait())
        await asyncio.gather(processor.start(), agent.start())
        recovered = await recovery(sink, stopped_at, produced_before)
        await asyncio.sleep(2.0)
        await feed.stop()
        await settle(lambda: feed.acked, [sink], limit=60)
        await asyncio.sleep(1.0)
    result = tally(
        "sigterm-under-load-restart",
        feed.acked,
        sink,
        recovered=[recovered],
        note=f"processor and agent stopped together at {RATE:.0f} events/s, then restarted",
    )
    logs = f"{processor.tail()}\n{agent.tail()}"
    assert codes == [0, 0], logs
    assert result.lost == 0, logs
    assert result.duplicated == 0, logs


@pytest.mark.timeout(180)
async def test_router_run_drains_its_embedded_broker_on_sigterm(sink: Sink, tmp_path: Path) -> None:
    kafka = KafkaSettings(partitions=4)  # no bootstrap servers: the embedded broker
    config = write_workspace(tmp_path / "workspace.yaml", kafka, [webhook("hook", sink.url)])
    log = tmp_path / "router.log"
    port = free_port()
    run = RoleProcess(
        "router-run",
        [
            *ROUTER, "run", "--config", str(config), "--gateway-port", str(port),
            "--state-dir", str(tmp_path / "state"), "--log-format", "json",
        ],
        log,
    )  # fmt: skip
    client = SegmentLikeClient(f"http://127.0.0.1:{port}", first_index=1_000_000)
    async with roles(run):
        assert run.process is not None
        (broker,) = [c for c in psutil.Process(run.process.pid).children() if "tansu" in c.name()]
        embedded = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{_port(broker)}"})
        sending = asyncio.create_task(client.run())
        async with Feeder(embedded, topics_for(kafka).raw, rate=2000.0, batch=100) as feed:
            await asyncio.sleep(3.0)
        stopped_at = time.monotonic()
        run.signal(signal.SIGTERM)
        code = await run.wait(60)
        exited_in = time.monotonic() - stopped_at
        client.stop()
        await sending
    messages = [orjson.loads(line)["message"] for line in log.read_text().splitlines()]
    result = tally(
        "router-run-sigterm-drain",
        client.accepted | feed.acked,
        sink,
        note=f"embedded broker; SIGTERM after {len(feed.acked)} events written to events.raw "
        f"at up to 2,000/s and while a client posts to the gateway; exited {exited_in:.1f} s "
        "later with every accepted event delivered",
    )
    assert code == 0, log.read_text()[-3000:]
    assert result.lost == 0, messages
    assert result.duplicated == 0, messages
    # From SIGTERM on: 503 shutting_down while it drains, then nothing listens (status 0).
    after = {(a.status, a.code) for a in client.answers if a.started > stopped_at + 0.1}
    assert (503, "shutting_down") in after, "the client kept posting while the router drained"
    assert after <= {(503, "shutting_down"), (0, "")}, after
    assert (
        "embedded broker drained: every accepted event was delivered or dead-lettered" in messages
    )
    assert not broker.is_running() or broker.status() == psutil.STATUS_ZOMBIE
