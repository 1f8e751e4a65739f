"""A rebalance during delivery: a second agent joins the group mid-stream, then leaves.

Agent A delivers ``dest.hook`` alone; agent B (the same command, as a second replica would
be) joins and takes half the partitions, then gets SIGTERM and hands them back to A by
leaving the group. Events keep arriving throughout.

Duplicates, and their bound: before a partition moves, its owner waits a few seconds for its
requests in flight and commits what finished; what it delivered but could not commit in that
time is delivered again by the next owner (at most a commit interval's worth per move).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.broker.topics import topics_for
from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.faults.harness import (
    Feeder,
    RoleProcess,
    longest_pause,
    roles,
    settle,
    tally,
    webhook,
    write_workspace,
)

RATE = 300.0


async def delivered_by(agent: RoleProcess) -> float:
    url = f"http://127.0.0.1:{agent.ops_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "router_delivery_delivered_total"
    )


@pytest.mark.timeout(180)
async def test_an_agent_joining_then_leaving_mid_stream_loses_nothing(
    fault_kafka: KafkaSettings, sink: Sink, tmp_path: Path
) -> None:
    kafka = fault_kafka
    bootstrap = kafka.bootstrap_servers or ""
    sink.slow(0.02)  # requests are in flight whenever the partitions move
    config = write_workspace(tmp_path / "workspace.yaml", kafka, [webhook("hook", sink.url)])
    first = RoleProcess.router(
        "agent-a", "deliver", config, bootstrap, tmp_path, "--commit-interval", "0.5"
    )
    second = RoleProcess.router(
        "agent-b", "deliver", config, bootstrap, tmp_path, "--commit-interval", "0.5"
    )
    topic = topics_for(kafka).destination("hook")
    async with roles(first), Feeder(kafka, topic, rate=RATE, headers=[("source", b"web")]) as feed:
        await asyncio.sleep(2.0)
        joined_at = time.monotonic()
        await second.start()
        await asyncio.sleep(3.0)
        by_second = await delivered_by(second)
        left_at = time.monotonic()
        second.signal(15)
        second_code = await second.wait()
        await asyncio.sleep(4.0)
        await feed.stop()
        ended_at = time.monotonic()
        await settle(lambda: feed.acked, [sink], limit=60)
        await asyncio.sleep(1.0)
    result = tally(
        "rebalance-join-leave",
        feed.acked,
        sink,
        recovered=[longest_pause(sink, joined_at, left_at), longest_pause(sink, left_at, ended_at)],
        note=f"a second agent joins mid-stream, then leaves on SIGTERM, at {RATE:.0f} events/s; "
        "recovered = longest pause in deliveries",
    )
    logs = f"{first.tail()}\n{second.tail()}"
    assert by_second > 0, "the second agent never got partitions: " + logs
    assert second_code == 0, logs
    assert result.lost == 0, logs
    assert result.duplicated <= 2 * (RATE * 0.5 + 4 * 10)
