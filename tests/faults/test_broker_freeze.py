"""The broker frozen for 30 s (SIGSTOP, then SIGCONT) under a steady stream of HTTP traffic.

``router gateway``, ``router process`` and ``router deliver`` run in processes of their own;
a client posts batches to the gateway the way Segment's libraries do (the same batch again
after a 503, with backoff). While the broker is frozen the gateway must answer 503 within its
produce timeout, and never 200: a 200 promises the events are on Kafka. After the thaw
nothing is restarted: every role must resume by itself, and every event the gateway accepted
must reach the partner.

Duplicates: a write whose acknowledgement came too late for its request (the client got 503
and sent the batch again) is on Kafka twice with the same messageIds; the processor's dedup
drops the second copy, so the partner sees none of these. What the partner may see twice is a
processor batch whose write timed out during the freeze but landed after the thaw: its outputs
were never acknowledged, so the processor writes them again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from router.broker.embedded import EmbeddedBroker, free_port
from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.faults.harness import (
    RoleProcess,
    SegmentLikeClient,
    recovery,
    roles,
    settle,
    tally,
    webhook,
    write_workspace,
)

FREEZE = 30.0
PRODUCE_TIMEOUT = 2.0


@pytest.mark.timeout(240)
async def test_broker_frozen_30s_gateway_says_503_and_everything_resumes(
    fault_broker: EmbeddedBroker, fault_kafka: KafkaSettings, sink: Sink, tmp_path: Path
) -> None:
    kafka = fault_kafka
    bootstrap = kafka.bootstrap_servers or ""
    config = write_workspace(
        tmp_path / "workspace.yaml",
        kafka,
        [webhook("hook", sink.url)],
        gateway={"produce_timeout": f"{PRODUCE_TIMEOUT:g}s"},
    )
    port = free_port()
    gateway = RoleProcess.router(
        "gateway", "gateway", config, bootstrap, tmp_path, "--port", str(port)
    )
    processor = RoleProcess.router("processor", "process", config, bootstrap, tmp_path)
    agent = RoleProcess.router("agent", "deliver", config, bootstrap, tmp_path)
    client = SegmentLikeClient(f"http://127.0.0.1:{port}", timeout=PRODUCE_TIMEOUT + 8)
    broker_pid = fault_broker.pid
    assert broker_pid is not None
    async with roles(gateway, processor, agent):
        sending = asyncio.create_task(client.run())
        try:
            await asyncio.sleep(3.0)
            frozen_at = time.monotonic()
            os.kill(broker_pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(FREEZE)
            finally:
                os.kill(broker_pid, signal.SIGCONT)
            thawed_at = time.monotonic()
            # Recovered: an event the client first sent after the thaw reached the partner.
            produced_after = await client.first_index_sent_after(thawed_at)
            recovered = await recovery(sink, thawed_at, produced_after, limit=90)
            await asyncio.sleep(3.0)
        finally:
            client.stop()
            await sending
        await settle(lambda: client.accepted, [sink], limit=90)
        await asyncio.sleep(1.0)
        alive = [role.process.returncode is None for role in (gateway, processor, agent)]
    result = tally(
        "broker-frozen-30s",
        client.accepted,
        sink,
        recovered=[recovered],
        note="SIGSTOP of the broker for 30 s under HTTP traffic; no process restarted",
    )
    logs = "\n".join(role.tail() for role in (gateway, processor, agent))
    assert alive == [True, True, True], logs
    assert result.lost == 0, logs
    during = [a for a in client.answers if frozen_at + 0.5 < a.finished < thawed_at]
    assert during, "the client kept sending while the broker was frozen"
    assert all(a.status == 503 for a in during), [(a.status, a.code) for a in during]
    assert {a.code for a in during} <= {"kafka_timeout", "kafka_unavailable", "overloaded"}
    slowest = max(a.finished - a.started for a in during)
    assert slowest <= PRODUCE_TIMEOUT + 2.0, f"a 503 took {slowest:.1f}s"
    # Rewritten processor batches: bounded by what was in flight when it froze.
    assert result.duplicated <= 200
