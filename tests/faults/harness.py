"""What every fault scenario is made of: router roles in their own processes, a steady
producer, fake partners, and a ledger that follows every messageId to a sink or a DLQ.

A scenario produces events with known messageIds (``f-<n>``, numbered in production order),
injects its fault, waits until every acknowledged event is accounted for, and reports one
:class:`Result` line: ``events, lost, duplicated, recovered-in-seconds``.

- lost: acknowledged by Kafka (or answered 200 by the gateway) and neither delivered (a 2xx
  from the partner) nor dead-lettered. Must be 0.
- duplicated: deliveries beyond the first of a messageId, plus events both delivered and
  dead-lettered. At-least-once allows them; each scenario bounds and explains them.
- recovered-in-seconds: from the fault (a kill, the thaw) to the first delivery of an event
  produced after it, the largest over the scenario's faults; for a rebalance, where
  deliveries never have to start again, the longest pause between two deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiokafka import AIOKafkaProducer

from router.broker.embedded import free_port
from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.kafka_helpers import consume

ROUTER = [sys.executable, "-m", "router.cli"]
WRITE_KEY = "wk-faults"
#: Every role process: a short session, so a killed member's partitions move within seconds.
SESSION_TIMEOUT = "2"

#: Every result line of the session, for the summary (tests/faults/conftest.py).
RESULTS: list[Result] = []


def message_id(index: int) -> str:
    return f"f-{index}"


def index_of(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])


def event(index: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{index % 53}",
        "messageId": message_id(index),
        "properties": {"index": index},
    }


# ---------------------------------------------------------------- results


@dataclass
class Result:
    scenario: str
    events: int
    lost: int
    duplicated: int
    recovered: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def recovered_in(self) -> str:
        return f"{max(self.recovered):.1f}" if self.recovered else "-"

    def line(self) -> str:
        each = ""
        if len(self.recovered) > 1:
            each = " [" + ", ".join(f"{seconds:.1f}" for seconds in self.recovered) + "]"
        return (
            f"fault {self.scenario}: events={self.events}, lost={self.lost}, "
            f"duplicated={self.duplicated}, recovered-in-seconds={self.recovered_in}{each}"
            + (f" ({self.note})" if self.note else "")
        )


def report(result: Result) -> Result:
    RESULTS.append(result)
    print("\n" + result.line(), flush=True)
    return result


# ---------------------------------------------------------------- workspaces


def webhook(dest_id: str, url: str, **delivery: Any) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": f"Hook {dest_id}",
        "type": "webhook",
        "sources": ["web"],
        "settings": {"url": url},
        "delivery": {
            "batch_size": 10,
            "concurrency": 4,
            "timeout": "2s",
            "backoff_min": "200ms",
            "backoff_max": "1s",
            "retry_window": "2m",
            **delivery,
        },
    }


def write_workspace(
    path: Path, kafka: KafkaSettings, destinations: Sequence[dict[str, Any]], **extra: Any
) -> Path:
    data = {
        "kafka": kafka.model_dump(exclude_none=True),
        "processor": {"poll_timeout": "100ms", "max_batch": 500},
        "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
        "destinations": list(destinations),
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- role processes


class RoleProcess:
    """``router <command>`` in a process of its own, restartable, logging to one file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.ops_port = 0

    @classmethod
    def router(
        cls, name: str, command: str, config: Path, bootstrap: str, workdir: Path, *extra: str
    ) -> RoleProcess:
        state = workdir / f"state-{name}"
        argv = [
            *ROUTER, command, "--config", str(config), "--bootstrap", bootstrap,
            "--session-timeout", SESSION_TIMEOUT, "--state-dir", str(state),
            "--shutdown-grace", "10", *extra,
        ]  # fmt: skip
        return cls(name, argv, workdir / f"{name}.log")

    async def start(self, *, limit: float = 60.0) -> None:
        """Spawn and return once ``/readyz`` answers 200."""
        self.ops_port = free_port()
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, "--ops-port", str(self.ops_port), stdout=output, stderr=output
            )
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited early: {self.tail()}")
                try:
                    url = f"http://127.0.0.1:{self.ops_port}/readyz"
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {limit:.0f}s: {self.tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.process.returncode is None
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait(10)

    async def close(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


@asynccontextmanager
async def roles(*processes: RoleProcess) -> AsyncIterator[None]:
    """Start ``processes`` together; kill whatever still runs at the end."""
    try:
        await asyncio.gather(*(p.start() for p in processes))
        yield
    finally:
        await asyncio.gather(*(p.close() for p in processes))


# ---------------------------------------------------------------- producing


class Feeder:
    """Writes numbered events to a topic at a steady rate; remembers what Kafka acknowledged."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        rate: float,
        headers: Sequence[tuple[str, bytes]] = (("write-key", WRITE_KEY.encode()),),
        batch: int = 10,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.rate = rate
        self.headers = list(headers)
        self.batch = batch
        self.produced = 0  # events handed to the producer, numbered 0..produced-1
        self.acked: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Feeder:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def run_until(self, count: int) -> None:
        """Wait until ``count`` events were produced, then stop."""
        while self.produced < count and self._task is not None and not self._task.done():  # noqa: ASYNC110 (polls a counter)
            await asyncio.sleep(0.05)
        await self.stop()

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap_servers, acks="all", linger_ms=5
        )
        await producer.start()
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                first = self.produced
                futures = []
                for index in range(first, first + self.batch):
                    value = event(index)
                    futures.append(
                        await producer.send(
                            self.topic,
                            orjson.dumps(value),
                            key=str(value["userId"]).encode(),
                            headers=self.headers,
                        )
                    )
                self.produced = first + self.batch
                results = await asyncio.gather(*futures, return_exceptions=True)
                for index, outcome in zip(range(first, self.produced), results, strict=True):
                    if not isinstance(outcome, BaseException):
                        self.acked.add(message_id(index))
                due = started + self.produced / self.rate
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, due - time.monotonic()))
        finally:
            await producer.stop()


# ---------------------------------------------------------------- an HTTP client

BATCH = 10


@dataclass
class Answer:
    started: float
    finished: float
    status: int  # 0: no HTTP answer (connection error or client timeout)
    code: str = ""


@dataclass
class SegmentLikeClient:
    """Posts numbered batches; on anything but 200 retries the same batch after a backoff."""

    url: str
    timeout: float = 10.0
    #: Numbers the events from here (to tell them from another producer's).
    first_index: int = 0
    accepted: set[str] = field(default_factory=set)
    answers: list[Answer] = field(default_factory=list)
    sent_batches: int = 0
    #: When each batch was first tried (batch n holds events n*BATCH .. n*BATCH+BATCH-1).
    first_tried: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def next_index(self) -> int:
        return self.first_index + self.sent_batches * BATCH

    async def first_index_sent_after(self, moment: float) -> int:
        """The first event of the first batch tried after ``moment`` (waits for it)."""
        while True:
            for number, tried in enumerate(self.first_tried):
                if tried >= moment:
                    return self.first_index + number * BATCH
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                first = self.next_index
                batch = [event(i) for i in range(first, first + BATCH)]
                self.first_tried.append(time.monotonic())
                backoff = 0.1
                while not self._stop.is_set():
                    started = time.monotonic()
                    status, code = 0, ""
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        body = {"batch": batch, "writeKey": WRITE_KEY}
                        async with session.post(f"{self.url}/v1/batch", json=body) as response:
                            status = response.status
                            if status != 200:
                                code = str((await response.json()).get("code"))
                    self.answers.append(Answer(started, time.monotonic(), status, code))
                    if status == 200:
                        self.accepted.update(message_id(i) for i in range(first, first + BATCH))
                        break
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                self.sent_batches += 1
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------- accounting


def first_delivery_after(sink: Sink, since: float, produced_before: int) -> float | None:
    """Seconds from ``since`` to the first 2xx delivery of an event numbered at least
    ``produced_before`` (one produced after the fault), or None if none arrived yet."""
    for received in sink.requests:
        if received.at < since or not 200 <= received.status < 300:
            continue
        if any(index_of(m) >= produced_before for m in received.message_ids if m.startswith("f-")):
            return received.at - since
    return None


async def recovery(sink: Sink, since: float, produced_before: int, *, limit: float = 60.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = first_delivery_after(sink, since, produced_before)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no event produced after the fault was delivered within {limit:.0f}s")


def longest_pause(sink: Sink, start: float, end: float) -> float:
    """The longest time without a 2xx delivery between ``start`` and ``end``."""
    moments = sorted(r.at for r in sink.requests if start <= r.at <= end and 200 <= r.status < 300)
    edges = [start, *moments, end]
    return max(later - earlier for earlier, later in itertools.pairwise(edges))


async def dead_lettered(kafka: KafkaSettings, topic: str) -> set[str]:
    records = await consume(kafka, topic, settle=0.5, timeout=20)
    return {orjson.loads(r.value)["messageId"] for r in records if r.value}


async def settle(
    accepted: Callable[[], set[str]],
    sinks: Sequence[Sink],
    dead: Callable[[], set[str]] | None = None,
    *,
    limit: float = 60.0,
) -> None:
    """Wait until every accepted messageId was delivered to every sink (or dead-lettered)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        wanted = accepted()
        done = dead() if dead else set()
        if all(wanted <= (sink.unique_delivered | done) for sink in sinks):
            return
        await asyncio.sleep(0.2)


def tally(
    scenario: str,
    accepted: set[str],
    sink: Sink,
    dead: set[str] | None = None,
    *,
    recovered: Sequence[float] = (),
    note: str = "",
) -> Result:
    dead = dead or set()
    delivered = sink.unique_delivered & accepted
    lost = accepted - delivered - dead
    both = delivered & dead
    return report(
        Result(
            scenario,
            events=len(accepted),
            lost=len(lost),
            duplicated=sink.duplicates + len(both),
            recovered=list(recovered),
            note=note,
        )
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
