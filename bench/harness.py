"""Shared pieces of the benchmarks: results, broker, workload, sink and role processes.

Everything listens on 127.0.0.1 only, every wait is bounded, and every figure uses a fresh
topic prefix (and a fresh broker) so figures cannot see each other's data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from bench.workload import WRITE_KEY, realistic_event
from router.broker.embedded import EmbeddedBroker, free_port
from router.config import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# ---------------------------------------------------------------- results


@dataclass
class Result:
    """One row of the table: ``ours`` against ``baseline`` measured in the same run."""

    figure: str
    ours: float
    baseline: float | None
    unit: str
    target: str
    passed: bool | None
    ratio: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        """The JSON row: figure, ours, baseline, ratio, target, pass, unit, details."""
        row = asdict(self)
        keys = ("figure", "ours", "baseline", "ratio", "target", "passed", "unit", "details")
        return {("pass" if k == "passed" else k): row[k] for k in keys}


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary_ms(latencies_us: Sequence[int]) -> dict[str, float]:
    ordered = sorted(latencies_us)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 50) / 1000,
        "p95_ms": percentile(ordered, 95) / 1000,
        "p99_ms": percentile(ordered, 99) / 1000,
        "max_ms": (ordered[-1] / 1000) if ordered else math.nan,
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- broker and topics


@contextlib.asynccontextmanager
async def fresh_broker() -> AsyncIterator[EmbeddedBroker]:
    """A new in-memory broker per figure: a figure never pays for another's stored data."""
    async with EmbeddedBroker() as broker:
        yield broker


def fresh_kafka(broker: EmbeddedBroker, figure: str, *, partitions: int = 4) -> KafkaSettings:
    prefix = f"bench.{figure}.{uuid.uuid4().hex[:6]}."
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, partitions=partitions, topic_prefix=prefix
    )


def write_yaml(data: dict[str, Any], directory: str, name: str = "workspace.yaml") -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return path


# ---------------------------------------------------------------- workload

_MID = b"@@MESSAGEID@@@@@@@@@"  # 20 bytes, replaced by a zero-padded counter
_NS = 1_111_111_111_111_111_111  # 19 digits, replaced by time.time_ns()
_NS_BYTES = str(_NS).encode()


class Templates:
    """Serialized ``realistic_event`` bodies with a unique messageId filled in per event.

    Producing a million events must take seconds, not minutes: the events are built and
    serialized once (``pool`` of them), then each record is a template with its counter (and,
    with ``stamp``, the write time in ns as ``context.benchNs``) substituted as bytes.
    """

    def __init__(self, *, pool: int = 20_000, stamp: bool = False, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.stamp = stamp
        self.items: list[tuple[bytes, bytes]] = []
        for i in range(pool):
            event = realistic_event(i, rng)
            event["messageId"] = _MID.decode()
            if stamp:
                # The processor sets receivedAt from the record timestamp (the write time).
                event.pop("receivedAt", None)
                event["context"]["benchNs"] = _NS
            self.items.append((event["userId"].encode(), orjson.dumps(event)))

    def record(self, i: int, run: str = "") -> tuple[bytes, bytes]:
        key, value = self.items[i % len(self.items)]
        value = value.replace(_MID, b"%s%014d" % (run.encode()[:6].ljust(6, b"-"), i))
        if self.stamp:
            value = value.replace(_NS_BYTES, str(time.time_ns()).encode())
        return key, value

    def event(self, i: int, run: str = "") -> dict[str, Any]:
        return orjson.loads(self.record(i, run)[1])  # type: ignore[no-any-return]


HEADERS = [("write-key", WRITE_KEY.encode())]


class RawWriter:
    """Writes template records to a topic with one ``send_batch`` per partition."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        linger_ms: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.headers = HEADERS if headers is None else headers
        self.producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
        )
        self.partitioner = DefaultPartitioner()
        self.partitions: list[int] = []

    async def start(self) -> None:
        await self.producer.start()
        self.partitions = sorted(await self.producer.partitions_for(self.topic))

    async def stop(self) -> None:
        await self.producer.stop()

    async def write(self, records: Sequence[tuple[bytes, bytes]]) -> asyncio.Future[Any]:
        """Submit; returns a future resolved once every record is acknowledged."""
        grouped: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        parts = self.partitions
        for key, value in records:
            grouped[self.partitioner(key, parts, parts)].append((key, value))
        futures = []
        headers = self.headers
        for partition, items in grouped.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(
                        await self.producer.send_batch(batch, self.topic, partition=partition)
                    )
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            futures.append(await self.producer.send_batch(batch, self.topic, partition=partition))
        return asyncio.gather(*futures)


async def produce_backlog(
    kafka: KafkaSettings,
    topic: str,
    count: int,
    *,
    templates: Templates | None = None,
    run: str = "b",
    chunk: int = 5000,
    window: int = 8,
) -> float:
    """Write ``count`` events as fast as the broker takes them; returns the seconds it took."""
    templates = templates or Templates()
    writer = RawWriter(kafka, topic, linger_ms=5)
    await writer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for start in range(0, count, chunk):
            records = [templates.record(i, run) for i in range(start, min(count, start + chunk))]
            pending.append(await writer.write(records))
            if len(pending) >= window:
                await pending.pop(0)
        await asyncio.gather(*pending)
    finally:
        await writer.stop()
    return time.perf_counter() - started


async def paced_write(
    kafka: KafkaSettings,
    topic: str,
    *,
    rate: float,
    seconds: float,
    templates: Templates,
    run: str,
    tick: float = 0.005,
) -> int:
    """Write ``rate`` events/s for ``seconds`` (open loop: a slow ack never slows the pace)."""
    writer = RawWriter(kafka, topic, linger_ms=0)
    await writer.start()
    loop = asyncio.get_running_loop()
    written = 0
    pending: set[asyncio.Future[Any]] = set()
    try:
        started = loop.time()
        end = started + seconds
        while True:
            now = loop.time()
            if now >= end:
                break
            due = int((now - started) * rate) - written
            if due > 0:
                records = [templates.record(written + i, run) for i in range(due)]
                future = await writer.write(records)
                pending.add(future)
                future.add_done_callback(pending.discard)
                written += due
            await asyncio.sleep(tick)
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending), 30)
    finally:
        await writer.stop()
    return written


# ---------------------------------------------------------------- processes


async def _wait_http(url: str, *, limit: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready within {limit:.0f}s")


class Process:
    """A child process (process group of its own) with bounded start and stop."""

    def __init__(self, argv: list[str], *, name: str, log_dir: str) -> None:
        self.argv = argv
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
        return ""


class SinkProcess(Process):
    """The recording sink (:mod:`bench.sink`) in a process of its own."""

    def __init__(self, log_dir: str) -> None:
        self.port = free_port()
        super().__init__(
            [PYTHON, "-m", "bench.sink", "--port", str(self.port)], name="sink", log_dir=log_dir
        )
        self.session: aiohttp.ClientSession | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self.spawn()
        await _wait_http(self.url("/_ping"), limit=20, proc=self.proc)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        await asyncio.to_thread(self.stop)

    async def control(self, behaviour: dict[str, dict[str, Any]]) -> None:
        assert self.session is not None
        async with self.session.post(self.url("/_control"), data=orjson.dumps(behaviour)) as r:
            r.raise_for_status()

    async def reset(self) -> None:
        assert self.session is not None
        async with self.session.post(self.url("/_reset")) as r:
            r.raise_for_status()

    async def stats(self) -> dict[str, dict[str, Any]]:
        assert self.session is not None
        async with self.session.get(self.url("/_stats")) as r:
            r.raise_for_status()
            return orjson.loads(await r.read())  # type: ignore[no-any-return]

    async def events(self, paths: Sequence[str] | None = None) -> int:
        stats = await self.stats()
        return sum(s["events"] for p, s in stats.items() if paths is None or p in paths)


class RoleProcess(Process):
    """A router role run as in production (``router process`` / ``router deliver``).

    Progress is read from its own ``/metrics``; :meth:`sample_rss` records its RSS.
    """

    def __init__(self, argv: list[str], *, name: str, log_dir: str) -> None:
        self.ops_port = free_port()
        super().__init__([*argv, "--ops-port", str(self.ops_port)], name=name, log_dir=log_dir)
        self.rss: list[tuple[float, int]] = []
        self._sampler: asyncio.Task[None] | None = None

    @classmethod
    def processor(cls, config: str, log_dir: str) -> RoleProcess:
        argv = [PYTHON, "-m", "router.cli", "process", "--config", config, "--log-level", "warning"]
        return cls(argv, name="processor", log_dir=log_dir)

    @classmethod
    def agent(
        cls, config: str, destinations: Sequence[str], log_dir: str, name: str
    ) -> RoleProcess:
        argv = [PYTHON, "-m", "router.cli", "deliver", "--config", config, "--log-level", "warning"]
        for dest in destinations:
            argv += ["--destination", dest]
        return cls(argv, name=name, log_dir=log_dir)

    async def start(self, *, limit: float = 60.0, sample_every: float | None = None) -> None:
        self.spawn()
        if sample_every:
            self._sampler = asyncio.create_task(self._sample(sample_every))
        try:
            await _wait_http(
                f"http://127.0.0.1:{self.ops_port}/readyz", limit=limit, proc=self.proc
            )
        except BaseException:
            log(f"{self.name} did not become ready:\n{self.tail()}")
            await self.close()
            raise

    async def _sample(self, every: float) -> None:
        import psutil

        process = psutil.Process(self.pid)
        while True:
            try:
                self.rss.append((time.monotonic(), process.memory_info().rss))
            except psutil.Error:
                return
            await asyncio.sleep(every)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``{(sample name, sorted labels): value}`` from the role's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.ops_port}/metrics"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            text = await response.text()
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    async def total(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        values = await self.metrics()
        wanted = set(labels.items())
        return sum(v for (n, ls), v in values.items() if n == name and wanted <= set(ls))

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
        await asyncio.to_thread(self.stop)


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, limit: float, every: float = 0.1, what: str = ""
) -> bool:
    """Poll ``check`` until it is true; False (not an exception) after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    if what:
        log(f"gave up waiting for {what} after {limit:.0f}s")
    return False


@contextlib.contextmanager
def scratch(figure: str) -> Any:
    """A temporary directory for configs, state and logs; kept (and named) if the figure fails."""
    directory = tempfile.mkdtemp(prefix=f"bench-{figure}-")
    try:
        yield directory
    except BaseException:
        log(f"{figure}: logs kept in {directory}")
        raise
    else:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def standalone(run: Callable[[bool], Awaitable[list[Result]]], *, details: bool = False) -> None:
    """``python -m bench.<figure> [--quick]``: run one figure and print its rows as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in asyncio.run(run(args.quick)):
        data = row.as_dict()
        if not details:
            data.pop("details", None)
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2 if details else 0).decode())
