"""Partners failing in every way at once, beside a healthy one, behind one delivery agent.

``router process`` and one ``router deliver`` (every destination, as the shared Kubernetes
Deployment runs them) deliver the same events to eight fake partners:

=============  =================================================  ============================
destination    the partner                                        every event ends
=============  =================================================  ============================
healthy        answers 200                                        delivered
slow           answers 200 after 0.3 s (within the 1 s timeout)   delivered
storm          503 until the fault clears, then 200               delivered after recovery
throttled      429 with Retry-After: 1 until it clears            delivered after recovery
timeouts       answers after 3 s (timeout 1 s) until it clears    delivered after recovery
refused        refuses connections until it clears                delivered after recovery
malformed      broken HTTP (truncated body, bad status line)      dead-lettered
               forever; its retry window is 4 s                   (retries_exhausted)
rejecting      400 forever                                        dead-lettered (http_400)
=============  =================================================  ============================

Exactly: an event is delivered or dead-lettered, never both and never neither. A request that
timed out is not a delivery (the fake partner sees the client go away before it answers), so
retries after timeouts are no duplicates either.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from router.broker.embedded import free_port
from router.broker.topics import topics_for
from router.config import KafkaSettings
from tests.delivery.helpers import open_sinks
from tests.delivery.sink import Sink
from tests.faults.harness import (
    Feeder,
    Result,
    RoleProcess,
    report,
    roles,
    webhook,
    write_workspace,
)
from tests.kafka_helpers import consume

EVENTS = 400
RATE = 100.0
FAULT = 6.0  # seconds from the first event until the recoverable faults clear
RECOVERING = ("storm", "throttled", "timeouts", "refused")
DELIVERED = ("healthy", "slow", *RECOVERING)
DEAD = {"malformed": "retries_exhausted", "rejecting": "http_400"}


class BrokenHttp:
    """A partner whose answers are not valid HTTP: a truncated body, then a bad status line."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> BrokenHttp:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                if self.requests % 2:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\ntruncated")
                else:
                    writer.write(b"HTTP/1.1 ok then\r\n\r\n")
                await writer.drain()
                break
        writer.close()


@asynccontextmanager
async def partners() -> AsyncIterator[dict[str, Sink]]:
    names = (*DELIVERED, "rejecting")
    async with open_sinks(len(names)) as started:
        yield dict(zip(names, started, strict=True))


def break_them(sinks: dict[str, Sink], clears_at: float) -> None:
    sinks["slow"].slow(0.3)
    sinks["storm"].script = lambda _events, _sink: (
        (503, {}) if time.monotonic() < clears_at else None
    )
    sinks["throttled"].script = lambda _events, _sink: (
        (429, {"Retry-After": "1"}) if time.monotonic() < clears_at else None
    )
    sinks["timeouts"].slow(3.0)
    sinks["rejecting"].fail(400)


async def heal_them(sinks: dict[str, Sink], clears_at: float) -> None:
    await sinks["refused"].refuse()
    await asyncio.sleep(max(0.0, clears_at - time.monotonic()))
    sinks["timeouts"].ok()
    await sinks["refused"].accept()


async def dead_letters(kafka: KafkaSettings, dest_id: str) -> dict[str, str]:
    """messageId -> reason, from ``dest.<id>.dlq``."""
    records = await consume(kafka, topics_for(kafka).dead_letter(dest_id), settle=0.5)
    return {
        value["messageId"]: value["reason"]
        for value in (orjson.loads(r.value) for r in records if r.value)
    }


@pytest.mark.timeout(240)
async def test_every_event_is_delivered_after_recovery_or_dead_lettered_exactly(
    fault_kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = fault_kafka
    bootstrap = kafka.bootstrap_servers or ""
    async with partners() as sinks, BrokenHttp() as broken:
        timing = {"timeout": "1s"}
        destinations = [webhook(name, sink.url, **timing) for name, sink in sinks.items()]
        destinations.append(webhook("malformed", broken.url, retry_window="4s", **timing))
        config = write_workspace(tmp_path / "workspace.yaml", kafka, destinations)
        processor = RoleProcess.router("processor", "process", config, bootstrap, tmp_path)
        agent = RoleProcess.router("agent", "deliver", config, bootstrap, tmp_path)
        async with roles(processor, agent):
            clears_at = time.monotonic() + FAULT
            break_them(sinks, clears_at)
            healing = asyncio.create_task(heal_them(sinks, clears_at))
            async with Feeder(kafka, topics_for(kafka).raw, rate=RATE) as feed:
                await feed.run_until(EVENTS)
            accepted = feed.acked
            caught_up: dict[str, float] = {}
            # Isolation: the healthy partner gets everything while the others still fail.
            while time.monotonic() < clears_at - 0.2:
                if accepted <= sinks["healthy"].unique_delivered:
                    caught_up["healthy"] = time.monotonic() - clears_at
                    break
                await asyncio.sleep(0.05)
            await healing
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(caught_up) < len(DELIVERED):
                for name in DELIVERED:
                    if name not in caught_up and accepted <= sinks[name].unique_delivered:
                        caught_up[name] = time.monotonic() - clears_at
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # late duplicates and dead letters
            dead = {name: await dead_letters(kafka, name) for name in (*DELIVERED, *DEAD)}
    logs = f"{processor.tail()}\n{agent.tail()}"
    lost = duplicated = 0
    for name in DELIVERED:
        sink = sinks[name]
        lost += len(accepted - sink.unique_delivered - dead[name].keys())
        duplicated += sink.duplicates + len(sink.unique_delivered & dead[name].keys())
        assert not dead[name], f"{name}: {len(dead[name])} dead letters"
    for name, reason in DEAD.items():
        delivered = sinks[name].unique_delivered if name in sinks else set()
        lost += len(accepted - dead[name].keys() - delivered)
        duplicated += len(delivered & dead[name].keys())
        assert not delivered, f"{name} delivered {len(delivered)}"
        assert set(dead[name].values()) == {reason}, (name, set(dead[name].values()))
    result = report(
        Result(
            "destination-faults",
            events=len(accepted) * (len(DELIVERED) + len(DEAD)),
            lost=lost,
            duplicated=duplicated,
            recovered=[caught_up.get(name, float("inf")) for name in RECOVERING],
            note="8 partners (healthy, slow, 503 storm, 429 Retry-After, timeouts, refused, "
            "malformed HTTP, 400) behind one agent; recovered = last event delivered after "
            "the faults cleared",
        )
    )
    assert len(accepted) == EVENTS
    assert result.lost == 0, logs
    assert result.duplicated == 0, logs
    assert caught_up.keys() == set(DELIVERED), (caught_up, logs)
    # The healthy partner never waited for the others: it had everything before they healed.
    assert caught_up["healthy"] < 0
