"""Segment's own Python library, with only ``host`` changed, writes to events.raw."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import segment.analytics as analytics
from segment.analytics.request import APIError

from router import spec
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.gateway import Gateway
from tests.gateway.conftest import SERVER_KEY
from tests.kafka_helpers import consume


def sdk_client(gateway: Gateway, key: str = SERVER_KEY, **options: Any) -> analytics.Client:
    errors: list[Exception] = []
    client = analytics.Client(
        key,
        host=f"http://127.0.0.1:{gateway.port}",
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
        **options,
    )
    client.errors = errors  # type: ignore[attr-defined]
    return client


def parse(value: str) -> datetime:
    return spec.parse_timestamp(value, "test")


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
async def test_every_call_type_arrives_stamped(
    gateway: Gateway, kafka: KafkaSettings, topics: Topics, gzip: bool
) -> None:
    client = sdk_client(gateway, sync_mode=True, gzip=gzip)
    sent = datetime.now(UTC) - timedelta(days=30)  # a month-old timestamp, as a replayed log
    calls = [
        lambda: client.track("u1", "Order Completed", {"total": 10}, timestamp=sent),
        lambda: client.identify("u2", {"plan": "pro"}),
        lambda: client.page("u3", "Docs", "Install", {"path": "/install"}),
        lambda: client.screen("u4", "App", "Feed"),
        lambda: client.group("u5", "g1", {"name": "Acme"}),
        lambda: client.alias("anon-6", "u6"),
        lambda: client.track(anonymous_id="a7", event="Anonymous Click"),
    ]
    for call in calls:
        await asyncio.to_thread(call)

    records = await consume(kafka, topics.raw, expect=len(calls))
    assert len(records) == len(calls)
    pairs = [(r, orjson.loads(r.value)) for r in records]
    by_user = {(e.get("userId") or e["anonymousId"]): (r, e) for r, e in pairs}
    assert set(by_user) == {"u1", "u2", "u3", "u4", "u5", "u6", "a7"}
    for user, (record, event) in by_user.items():
        assert record.key == user.encode()
        assert dict(record.headers)["write-key"] == SERVER_KEY.encode()
        assert "writeKey" not in event
        assert event["receivedAt"] and event["messageId"] and event["timestamp"]
        assert event["context"]["library"]["name"] == "analytics-python"
    assert by_user["u1"][1]["event"] == "Order Completed"
    assert by_user["u1"][1]["properties"] == {"total": 10}
    assert by_user["u3"][1]["type"] == "page" and by_user["u3"][1]["name"] == "Install"
    assert by_user["u4"][1]["type"] == "screen"
    assert by_user["u5"][1]["groupId"] == "g1"
    assert by_user["u6"][1]["previousId"] == "anon-6"
    assert by_user["a7"][1]["anonymousId"] == "a7" and not by_user["a7"][1].get("userId")

    # Timestamp correction: timestamp = receivedAt - (sentAt - originalTimestamp).
    order = by_user["u1"][1]
    assert parse(order["originalTimestamp"]) == sent.replace(
        microsecond=sent.microsecond // 1000 * 1000
    )
    expected = parse(order["receivedAt"]) - (
        parse(order["sentAt"]) - parse(order["originalTimestamp"])
    )
    assert abs(parse(order["timestamp"]) - expected) <= timedelta(milliseconds=1)
    assert abs(parse(order["timestamp"]) - sent) < timedelta(seconds=5)  # same clock: no skew


async def test_queued_batches_with_gzip(
    gateway: Gateway, kafka: KafkaSettings, topics: Topics
) -> None:
    """The library's normal mode: a background thread posts batches of 100 to /v1/batch."""
    client = sdk_client(gateway, gzip=True, upload_size=100, upload_interval=0.05)
    for i in range(250):
        client.track(f"user-{i % 7}", "Clicked", {"n": i}, context={"app": {"name": "shop"}})
    await asyncio.to_thread(client.shutdown)
    assert client.errors == []  # type: ignore[attr-defined]

    records = await consume(kafka, topics.raw, expect=250)
    assert len(records) == 250
    events = [orjson.loads(r.value) for r in records]
    assert sorted(e["properties"]["n"] for e in events) == list(range(250))
    assert len({e["messageId"] for e in events}) == 250
    for record, event in zip(records, events, strict=True):
        assert record.key == event["userId"].encode()
        assert event["context"]["app"] == {"name": "shop"}
    # Events of one user share a partition (one user's order and dedup store).
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())


async def test_library_reads_the_error_code(gateway: Gateway) -> None:
    """A refused request raises the library's APIError with our code, so it is not retried."""
    client = sdk_client(gateway, key="wk-nobody", sync_mode=True)
    with pytest.raises(APIError) as caught:
        await asyncio.to_thread(client.track, "u1", "Clicked")
    assert caught.value.status == 401
    assert caught.value.code == "invalid_write_key"
