"""The gateway's parts without HTTP or Kafka: coalescing, rate limits, keys, bodies."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner

from router.broker.clients import OutRecord
from router.gateway import auth, browser, parsing
from router.gateway.errors import BadRequest, RateLimited, Unauthorized, Unavailable
from router.gateway.producer import KeyPartitioner, ProduceAccumulator
from router.gateway.ratelimit import RateLimiter
from tests.gateway.conftest import basic


class FakeSender:
    """Records each send; ``gate`` holds sends until the test opens it."""

    def __init__(self) -> None:
        self.sends: list[list[OutRecord]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def send(self, records: Sequence[OutRecord]) -> None:
        self.sends.append(list(records))
        await self.gate.wait()
        if self.error is not None:
            raise self.error


def rec(i: int) -> OutRecord:
    return OutRecord("t", str(i).encode(), b"{}")


async def test_concurrent_requests_share_one_send() -> None:
    sender = FakeSender()
    accumulator = ProduceAccumulator(sender, max_in_flight=1)  # type: ignore[arg-type]
    await accumulator.start()
    try:
        sender.gate.clear()
        first = asyncio.create_task(accumulator.write([rec(0)]))
        await asyncio.sleep(0.01)  # the first send is now in flight, holding the only slot
        rest = [asyncio.create_task(accumulator.write([rec(i), rec(i)])) for i in range(1, 51)]
        await asyncio.sleep(0.01)
        assert len(sender.sends) == 1 and not first.done()
        sender.gate.set()
        await asyncio.gather(first, *rest)
        # Everything that arrived while the first write was awaiting its ack left together.
        assert [len(s) for s in sender.sends] == [1, 100]
    finally:
        await accumulator.stop()


async def test_sends_are_capped_but_requests_never_split() -> None:
    sender = FakeSender()
    accumulator = ProduceAccumulator(sender, max_in_flight=1, max_records=5)  # type: ignore[arg-type]
    await accumulator.start()
    try:
        sender.gate.clear()
        first = asyncio.create_task(accumulator.write([rec(0)]))
        await asyncio.sleep(0.01)
        sizes = [3, 3, 7, 1]
        tasks = [asyncio.create_task(accumulator.write([rec(0)] * n)) for n in sizes]
        await asyncio.sleep(0.01)
        sender.gate.set()
        await asyncio.gather(first, *tasks)
        assert [len(s) for s in sender.sends] == [1, 3, 3, 7, 1]
    finally:
        await accumulator.stop()


async def test_kafka_errors_and_timeouts_become_503() -> None:
    sender = FakeSender()
    accumulator = ProduceAccumulator(sender, timeout=0.2)  # type: ignore[arg-type]
    await accumulator.start()
    try:
        sender.error = KafkaConnectionError("down")
        with pytest.raises(Unavailable) as caught:
            await accumulator.write([rec(1)])
        assert caught.value.code == "kafka_unavailable" and caught.value.status == 503
        assert accumulator.last_error is not None

        sender.error = None
        sender.gate.clear()
        with pytest.raises(Unavailable) as caught:
            await accumulator.write([rec(2)])
        assert caught.value.code == "kafka_timeout"
        sender.gate.set()
        await accumulator.write([rec(3)])  # recovers
    finally:
        await accumulator.stop()


async def test_pending_is_bounded() -> None:
    sender = FakeSender()
    accumulator = ProduceAccumulator(sender, max_in_flight=1, max_pending=10)  # type: ignore[arg-type]
    await accumulator.start()
    try:
        sender.gate.clear()
        held = asyncio.create_task(accumulator.write([rec(0)]))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(accumulator.write([rec(1)] * 8))
        await asyncio.sleep(0.01)
        with pytest.raises(Unavailable) as caught:
            await accumulator.write([rec(2)] * 3)
        assert caught.value.code == "overloaded"
        sender.gate.set()
        await asyncio.gather(held, waiting)
    finally:
        await accumulator.stop()


async def test_stop_sends_what_is_pending_then_refuses() -> None:
    sender = FakeSender()
    accumulator = ProduceAccumulator(sender, max_in_flight=1)  # type: ignore[arg-type]
    await accumulator.start()
    sender.gate.clear()
    first = asyncio.create_task(accumulator.write([rec(0)]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(accumulator.write([rec(1)]))
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(accumulator.stop(grace=2))
    await asyncio.sleep(0.01)
    sender.gate.set()
    await asyncio.gather(first, second, stopping)
    assert sum(len(s) for s in sender.sends) == 2
    with pytest.raises(Unavailable) as caught:
        await accumulator.write([rec(2)])
    assert caught.value.code == "shutting_down"


def test_key_partitioner_matches_kafka_default() -> None:
    default = DefaultPartitioner()
    partitions = [0, 1, 2, 3, 4, 5]
    cached = KeyPartitioner(partitions, max_keys=10)
    for i in range(100):
        key = f"user-{i}".encode()
        assert cached(key) == default(key, partitions, partitions)
        assert cached(key) == default(key, partitions, partitions)  # from the cache


def test_rate_limiter_token_bucket() -> None:
    now = [100.0]
    limiter = RateLimiter(["k"], rate=10, burst=20, clock=lambda: now[0])
    limiter.check("k", 20)
    with pytest.raises(RateLimited) as caught:
        limiter.check("k", 1)
    assert caught.value.retry_after == 1
    assert caught.value.headers == {"Retry-After": "1", "X-RateLimit-Reset": "1"}
    now[0] += 0.5
    limiter.check("k", 5)
    # Larger than the burst: admitted on a full bucket, and the debt is waited off.
    now[0] += 100
    limiter.check("k", 50)
    with pytest.raises(RateLimited) as caught:
        limiter.check("k", 1)
    assert caught.value.retry_after == 4  # 30 tokens of debt + 1, at 10/s, rounded up
    limiter.check("unknown", 10**6)  # only configured keys have buckets


def test_write_key_from_headers() -> None:
    assert auth.key_from_headers(basic("abc")) == "abc"
    assert auth.key_from_headers({"Authorization": "basic YWJjOg=="}) == "abc"
    assert auth.key_from_headers({"X-Write-Key": " abc "}) == "abc"
    assert auth.key_from_headers({"Authorization": "Bearer t"}) is None
    assert auth.key_from_headers({}) is None
    with pytest.raises(Unauthorized):
        auth.key_from_headers({"Authorization": "Basic !!"})
    sources = {"abc": "web"}
    assert auth.resolve(None, {"writeKey": "abc"}, sources) == ("abc", "web")
    with pytest.raises(Unauthorized) as caught:
        auth.resolve(None, {}, sources)
    assert caught.value.code == "missing_write_key"


def test_decode_bounds() -> None:
    limit = parsing.Limit(100, "too_big", "a thing")
    assert parsing.decode(b"abc", None, limit) == b"abc"
    assert parsing.decode(gzip.compress(b"abc"), "gzip", limit) == b"abc"
    with pytest.raises(BadRequest) as caught:
        parsing.decode(gzip.compress(b"x" * 101), "gzip", limit)
    assert caught.value.code == "too_big"
    with pytest.raises(BadRequest) as caught:
        parsing.decode(b"junk", "gzip", limit)
    assert caught.value.code == "invalid_gzip"


def test_api_host() -> None:
    assert browser.api_host(None, "127.0.0.1:8080", "http") == ("127.0.0.1:8080/v1", "http")
    assert browser.api_host("https://r.example", "x", "http") == ("r.example/v1", "https")
    assert browser.api_host("https://r.example:8443/seg/", "x", "http") == (
        "r.example:8443/seg/v1",
        "https",
    )


async def test_a_request_is_answered_by_its_deadline_whatever_came_before() -> None:
    """The deadline counts from when the gateway had the request, not from the write: time
    spent waiting for the CPU before it counts too, and a request already past its deadline
    is refused at once and nothing of it is written."""
    sender = FakeSender()
    accumulator = ProduceAccumulator(sender, timeout=5.0)  # type: ignore[arg-type]
    await accumulator.start()
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(Unavailable) as caught:
            await accumulator.write([rec(1)], deadline=loop.time() - 0.1)
        assert caught.value.code == "kafka_timeout"
        await asyncio.sleep(0.01)
        assert sender.sends == []

        sender.gate.clear()
        started = loop.time()
        with pytest.raises(Unavailable):
            await accumulator.write([rec(2)], deadline=started + 0.2)
        assert loop.time() - started < 1.0  # the deadline, not the 5 s timeout
        sender.gate.set()
    finally:
        await accumulator.stop()
