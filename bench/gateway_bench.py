"""Gateway: ``/v1/batch`` events/s versus a plain aiokafka producer; single-event latency.

The gateway runs as in production (``router gateway``, its own process). Both sides write the
same events (the bench mix, without ``receivedAt``: the gateway stamps it) to the same
``events.raw`` with ``acks="all"``:

- throughput: ``CONCURRENCY`` clients each posting batches of ``BATCH`` events (bodies
  prepared in advance, HTTP Basic write key) until ``events`` are acknowledged with 200,
  versus the same number of tasks each handing ``BATCH`` events to a plain
  ``AIOKafkaProducer`` (``orjson.dumps`` + ``send`` per event, keyed by userId, then await
  the acks). Rounds alternate producer / gateway; the median counts. Target: >= 0.8x.
- latency: single-event ``POST /v1/track`` at a fixed 1,000 requests/s (open loop), from
  sending to the 200; versus ``send_and_wait`` of one event at the same rate. Target: the
  gateway's P99 <= 20 ms.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import (
    PYTHON,
    Result,
    RoleProcess,
    Templates,
    fresh_broker,
    fresh_kafka,
    log,
    scratch,
    standalone,
    summary_ms,
    write_yaml,
)
from bench.workload import WRITE_KEY, bench_workspace_data
from router.broker.embedded import free_port
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings

CONCURRENCY = 8
BATCH = 100
AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


def events(count: int, run: str) -> list[dict[str, Any]]:
    templates = Templates(stamp=False)
    out = []
    for i in range(count):
        event = templates.event(i, run)
        event.pop("receivedAt", None)
        out.append(event)
    return out


async def through_gateway(url: str, bodies: list[bytes], per_body: int) -> float:
    """Post every body (``CONCURRENCY`` at a time); events/s acknowledged with 200."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failures = 0
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    failures += 1

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} gateway request(s) failed")
    return len(bodies) * per_body / elapsed


async def through_producer(
    kafka: KafkaSettings, topic: str, batches: list[list[dict[str, Any]]]
) -> float:
    """The baseline: the same events, ``CONCURRENCY`` tasks, a plain producer."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    headers = [("write-key", WRITE_KEY.encode())]

    async def task() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            futures = [
                await producer.send(
                    topic, orjson.dumps(e), key=e["userId"].encode(), headers=headers
                )
                for e in batch
            ]
            await asyncio.gather(*futures)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(CONCURRENCY)))
        return sum(len(b) for b in batches) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def paced(
    rate: float, seconds: float, call: Any, bodies: list[Any], *, limit: float = 10.0
) -> list[int]:
    """Start ``call(body)`` at ``rate``/s for ``seconds`` (open loop); latencies in us."""
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: Any) -> None:
        started = time.perf_counter_ns()
        await call(body)
        latencies.append((time.perf_counter_ns() - started) // 1000)

    start = loop.time()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            task = asyncio.create_task(one(bodies[sent % len(bodies)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.001)
    if tasks:
        await asyncio.wait(tasks, timeout=limit)
    return latencies


async def run(quick: bool = False) -> list[Result]:
    total, rounds, seconds = (20_000, 1, 3.0) if quick else (100_000, 3, 10.0)
    rates: dict[str, list[float]] = {"gateway": [], "producer": []}
    with scratch("gateway") as directory:
        async with fresh_broker() as broker:
            kafka = fresh_kafka(broker, "gateway")
            topics = Topics(kafka.topic_prefix)
            await ensure_topics(kafka, [topics.raw, topics.dlq])
            config = write_yaml(bench_workspace_data(kafka, f"{directory}/state"), directory)
            port = free_port()
            gateway = RoleProcess(
                [
                    *(PYTHON, "-m", "router.cli", "gateway", "--config", config),
                    *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
                ],
                name="gateway",
                log_dir=directory,
            )
            await gateway.start()
            try:
                base = f"http://127.0.0.1:{port}"
                for i in range(rounds):
                    batch_events = events(total, f"g{i}")
                    batches = [batch_events[s : s + BATCH] for s in range(0, total, BATCH)]
                    bodies = [orjson.dumps({"batch": b}) for b in batches]
                    rates["producer"].append(await through_producer(kafka, topics.raw, batches))
                    rates["gateway"].append(
                        await through_gateway(f"{base}/v1/batch", bodies, BATCH)
                    )
                    log(
                        f"gateway round {i + 1}: /v1/batch {rates['gateway'][-1]:.0f}/s, "
                        f"plain producer {rates['producer'][-1]:.0f}/s"
                    )
                singles = events(2000, "single")
                # Each event to its own call's endpoint (/v1/track, /v1/identify, /v1/page).
                single_requests = [(f"{base}/v1/{e['type']}", orjson.dumps(e)) for e in singles]
                headers = {"Authorization": AUTH, "Content-Type": "application/json"}
                refused: list[int] = []
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as session:

                    async def track(request: tuple[str, bytes]) -> None:
                        url, body = request
                        async with session.post(url, data=body, headers=headers) as response:
                            await response.read()
                            if response.status != 200:
                                refused.append(response.status)

                    await paced(200, 1.0, track, single_requests)  # warm the connections
                    gateway_lat = await paced(1000, seconds, track, single_requests)
                if refused:
                    raise RuntimeError(
                        f"{len(refused)} single-event request(s) refused: {refused[:5]}"
                    )
                producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
                await producer.start()
                try:

                    async def send(event: dict[str, Any]) -> None:
                        await producer.send_and_wait(
                            topics.raw, orjson.dumps(event), key=event["userId"].encode()
                        )

                    producer_lat = await paced(1000, seconds, send, singles)
                finally:
                    await producer.stop()
            finally:
                await gateway.close()
    ours = statistics.median(rates["gateway"])
    base_rate = statistics.median(rates["producer"])
    g, p = summary_ms(gateway_lat), summary_ms(producer_lat)
    log(f"gateway single events at 1000/s: P50 {g['p50_ms']:.1f} P99 {g['p99_ms']:.1f} ms")
    return [
        Result(
            "gateway /v1/batch throughput / plain producer",
            ours,
            base_rate,
            unit="events/s",
            target=">= 0.8x",
            passed=ours >= 0.8 * base_rate,
            details={"events": total, "batch": BATCH, "concurrency": CONCURRENCY, "rounds": rates},
        ),
        Result(
            "gateway single-event P99 at 1000 req/s",
            g["p99_ms"],
            p["p99_ms"],
            unit="ms",
            target="<= 20 ms",
            passed=g["p99_ms"] <= 20,
            details={"seconds": seconds, "gateway": g, "producer_send_and_wait": p},
        ),
    ]


if __name__ == "__main__":
    standalone(run)
