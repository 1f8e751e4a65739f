"""Customer.io and Braze through a real delivery agent, embedded broker and local partners.

Per partner: a throttled first attempt is retried when the partner said, a refused item
dead-letters only its own event (the rest of the batch is delivered once), and the
credentials appear in no dead letter, status record, metric or log line.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from router.broker.topics import topics_for
from router.config import KafkaSettings
from router.spec import format_timestamp
from tests.delivery.helpers import (
    FAST_DELIVERY,
    make_workspace,
    produce_events,
    running_agent,
    samples,
    scrape,
    unique_kafka,
    value,
    wait_until,
)
from tests.destinations.braze_fake import FakeBraze
from tests.destinations.customerio_fake import FakeCustomerIO
from tests.kafka_helpers import consume, values

pytestmark = pytest.mark.integration

SITE_ID = "site-lane-4c1d9e"
CIO_KEY = "cio-lane-key-71b0f3aa"
BRAZE_KEY = "braze-lane-key-0d5e9b61c2"


@pytest.fixture
def kafka_ns(kafka: KafkaSettings) -> KafkaSettings:
    return unique_kafka(kafka)


async def final_metrics(port: int, destination: str, *, delivered: int, failed: int) -> str:
    """The agent's metrics once every event has its final outcome (bounded wait)."""
    deadline = time.monotonic() + 20
    while True:
        text = await scrape(port)
        parsed = samples(text)
        done = value(parsed, "router_delivery_delivered_total", destination=destination)
        dead = sum(
            v
            for (name, labels), v in parsed.items()
            if name == "router_delivery_failed_total" and ("destination", destination) in labels
        )
        if (done, dead) == (delivered, failed) or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.1)


def stamped(index: int, **fields: Any) -> dict[str, Any]:
    now = format_timestamp(datetime.now(UTC))
    return {"messageId": f"m-{index}", "timestamp": now, "receivedAt": now, **fields}


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in text]


async def test_customerio_lane(kafka_ns: KafkaSettings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="router")
    caplog.set_level(logging.DEBUG, logger="destinations")
    topics = topics_for(kafka_ns)
    secrets = [SITE_ID, CIO_KEY, base64.b64encode(f"{SITE_ID}:{CIO_KEY}".encode()).decode()]
    events = [stamped(i, type="track", userId=f"u{i}", event="Paid") for i in range(8)]
    events[3] = stamped(3, type="identify", userId="u3", traits={"k" * 151: "too long a name"})
    events.append(stamped(8, type="track", anonymousId="a8", event="Browsed"))
    async with FakeCustomerIO(site_id=SITE_ID, api_key=CIO_KEY) as cio:
        dest = {
            "id": "cio",
            "name": "Customer.io",
            "type": "customerio",
            "sources": ["web"],
            "settings": {"site_id": SITE_ID, "api_key": CIO_KEY, "url": cio.url},
            "delivery": {**FAST_DELIVERY, "batch_size": 20, "flush_interval": "300ms"},
        }
        ws = make_workspace(kafka_ns, [dest])
        async with running_agent(ws, ["cio"]) as (_agent, ops):
            cio.throttle(1, retry_after="1")
            await produce_events(kafka_ns, topics.destination("cio"), events)
            await wait_until(
                lambda: len(cio.operations) + len(cio.anonymous_events) == 8,
                timeout=30,
                what="8 events accepted by Customer.io",
            )
            metrics = await final_metrics(ops.port, "cio", delivered=8, failed=1)
            dead = await consume(kafka_ns, topics.dead_letter("cio"), expect=1, settle=0.5)
            statuses = await consume(kafka_ns, topics.status, settle=0.5)
    assert cio.problems == []
    [letter] = values(dead)
    assert (letter["messageId"], letter["reason"]) == ("m-3", "rejected_item")
    assert "attribute name cannot be longer than 150 bytes" in letter["error"]["message"]
    # Status records are per request (and outcome): one (messageId, outcome) per event in each.
    outcomes = sorted(
        (message_id, s["outcome"]) for s in values(statuses) for message_id in s["messageIds"]
    )
    assert ("m-3", "dlq") in outcomes
    assert sum(1 for _, outcome in outcomes if outcome == "delivered") == 8
    assert {o for m, o in outcomes if m != "m-3"} <= {"delivered", "retry"}
    parsed = samples(metrics)
    assert value(parsed, "router_delivery_delivered_total", destination="cio") == 8
    assert value(parsed, "router_delivery_failed_total", destination="cio", reason="rejected_item")
    assert value(parsed, "router_delivery_retries_total", destination="cio", reason="http_429")
    for where, text in [
        ("dead letters", b"".join(r.value or b"" for r in dead).decode()),
        ("status records", b"".join(r.value or b"" for r in statuses).decode()),
        ("metrics", metrics),
        ("logs", caplog.text),
    ]:
        assert leaks(text, secrets) == [], where


async def test_braze_lane(kafka_ns: KafkaSettings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="router")
    caplog.set_level(logging.DEBUG, logger="destinations")
    topics = topics_for(kafka_ns)
    events = [stamped(i, type="track", userId=f"u{i}", event="Paid") for i in range(8)]
    events[5] = stamped(5, type="track", userId="u5", event="Bad", properties={"$x": 1})
    products = [{"product_id": "p1", "price": 5.0}, {"product_id": "p2", "price": 7.5}]
    events.append(
        stamped(
            8,
            type="track",
            userId="u8",
            event="Order Completed",
            properties={"products": products, "currency": "USD"},
        )
    )
    async with FakeBraze(api_key=BRAZE_KEY) as braze:
        dest = {
            "id": "braze",
            "name": "Braze",
            "type": "braze",
            "sources": ["web"],
            "settings": {"rest_endpoint": braze.url, "api_key": BRAZE_KEY},
            "delivery": {**FAST_DELIVERY, "batch_size": 20, "flush_interval": "300ms"},
        }
        ws = make_workspace(kafka_ns, [dest])
        async with running_agent(ws, ["braze"]) as (_agent, ops):
            braze.throttle(1, reset_in=2.0)
            await produce_events(kafka_ns, topics.destination("braze"), events)
            await wait_until(
                lambda: len(braze.events) == 7 and len(braze.purchases) == 2,
                timeout=30,
                what="7 events and an order's 2 purchases accepted by Braze",
            )
            metrics = await final_metrics(ops.port, "braze", delivered=8, failed=1)
            dead = await consume(kafka_ns, topics.dead_letter("braze"), expect=1, settle=0.5)
            statuses = await consume(kafka_ns, topics.status, settle=0.5)
    assert braze.problems == []
    [letter] = values(dead)
    assert (letter["messageId"], letter["reason"]) == ("m-5", "rejected_item")
    assert "invalid property name" in letter["error"]["message"]
    assert letter["request"]["headers"]["Authorization"] == "***"
    parsed = samples(metrics)
    assert value(parsed, "router_delivery_delivered_total", destination="braze") == 8
    assert value(parsed, "router_delivery_retries_total", destination="braze", reason="http_429")
    # The 429 asked to wait until X-RateLimit-Reset: the retry was due no earlier than that.
    retries = [s for s in values(statuses) if s["outcome"] == "retry"]
    assert retries
    for status in retries:
        waited = _seconds(status["dueAt"]) - _seconds(status["at"])
        assert waited >= 0.9, status  # backoff_min is 50 ms: only the reset explains this
    for where, text in [
        ("dead letters", b"".join(r.value or b"" for r in dead).decode()),
        ("status records", b"".join(r.value or b"" for r in statuses).decode()),
        ("metrics", metrics),
        ("logs", caplog.text),
    ]:
        assert BRAZE_KEY not in text, where
