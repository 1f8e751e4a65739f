"""A delivery agent killed mid-batch loses nothing; its successor's duplicates are counted.

The agent runs as ``router deliver`` in a subprocess; the fake partner runs here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from router.broker.embedded import free_port
from router.broker.topics import topics_for
from router.config import KafkaSettings
from tests.delivery.helpers import (
    destination,
    event,
    produce_events,
    samples,
    scrape,
    value,
    wait_until,
    workspace_dict,
)
from tests.delivery.sink import Sink
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration


@asynccontextmanager
async def agent_process(
    config: Path, bootstrap: str, log: Path, *, grace: float = 5.0
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``router deliver`` for destination "hook"; yields once /readyz answers 200."""
    port = free_port()
    command = [
        "-m", "router.cli", "deliver", "--config", str(config), "--destination", "hook",
        "--bootstrap", bootstrap, "--ops-port", str(port), "--shutdown-grace", str(grace),
        "--session-timeout", "3", "--commit-interval", "0.3",
        "--state-dir", str(config.parent / "state"),
    ]  # fmt: skip
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, stdout=output, stderr=output, env=dict(os.environ)
        )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                if process.returncode is not None:
                    raise AssertionError(f"agent exited: {_tail(log)}")
                if await _ready(session, port):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"agent not ready within 30s: {_tail(log)}")
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)


async def _ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False  # not listening yet


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def health(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        data: dict[str, Any] = await response.json()
        return data


async def test_sigkill_mid_batch_loses_nothing(
    kafka_ns: KafkaSettings,
    sink: Sink,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    topics = topics_for(kafka_ns)
    n = 300
    sink.slow(0.05)  # requests in flight when the kill lands
    dest = destination("hook", sink.url, batch_size=5, concurrency=2, timeout="5s")
    config = tmp_path / "workspace.yaml"
    config.write_text(yaml.safe_dump(workspace_dict(kafka_ns, [dest])))
    log = tmp_path / "agent.log"
    bootstrap = kafka_ns.bootstrap_servers or ""
    produced = [event(i) for i in range(n)]

    async with agent_process(config, bootstrap, log) as (first, port):
        assert (await health(port))["ok"]
        await produce_events(kafka_ns, topics.destination("hook"), produced)
        await wait_until(
            lambda: len(sink.unique_delivered) >= 60, timeout=30, what="first agent delivering"
        )
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 10)
    await asyncio.sleep(0.2)  # let the partner finish the requests the kill cut off
    delivered_before = sum(sink.delivered.values())
    assert delivered_before < n, "the kill came too late to land mid-run"

    async with agent_process(config, bootstrap, log) as (second, port):
        await wait_until(
            lambda: len(sink.unique_delivered) == n,
            timeout=40,
            what=f"every event delivered after the restart (log: {log})",
        )
        await wait_until(lambda: sum(sink.delivered.values()) - delivered_before > 0, timeout=5)
        await asyncio.sleep(0.5)  # a duplicate, if any, would arrive now
        parsed = samples(await scrape(port))
        delivered_after = sum(sink.delivered.values()) - delivered_before
        assert (
            value(parsed, "router_delivery_delivered_total", destination="hook") == delivered_after
        )
        assert value(parsed, "router_delivery_dlq_total", destination="hook") == 0
        # SIGTERM: stop fetching, finish, commit, exit 0 within the grace period.
        second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), 5.0 + 3.0)
        assert code == 0, _tail(log)

    assert sink.unique_delivered == {e["messageId"] for e in produced}
    assert not await consume(kafka_ns, topics.dead_letter("hook"), settle=0.3)
    duplicates = sink.duplicates
    record_property("duplicates_after_sigkill", duplicates)
    print(f"\nSIGKILL after {delivered_before} deliveries: {duplicates} duplicate(s) of {n} events")
    # At-least-once: duplicates are allowed but bounded by what was in flight (uncommitted).
    assert duplicates <= 5 * 2 * 10
