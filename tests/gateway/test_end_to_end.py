"""Segment's Python library -> gateway -> events.raw -> processor -> delivery -> a webhook."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import segment.analytics as analytics
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.broker.topics import Topics
from router.config import KafkaSettings, Workspace
from router.delivery.agent import DeliveryAgent
from router.gateway import Gateway
from router.processor import Processor
from router.workspace import validate_workspace
from tests.kafka_helpers import consume

KEY = "wk-e2e"


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]], asyncio.Event]]:
    """A partner that records what it receives; yields (url, bodies, "something arrived")."""
    received: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(orjson.loads(await request.read()))
        arrived.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received, arrived
    finally:
        await runner.cleanup()


def workspace(kafka: KafkaSettings, state_dir: Path, url: str) -> Workspace:
    hook = {"url": url}
    fast = {"backoff_min": "50ms", "backoff_max": "200ms", "timeout": "2s"}
    return validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(state_dir), "poll_timeout": "100ms"},
            "sources": [{"id": "shop", "write_keys": [KEY]}],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "settings": hook,
                    "sources": ["shop"],
                    "delivery": fast,
                },
                {
                    "id": "orders",
                    "name": "Orders",
                    "type": "webhook",
                    "settings": hook,
                    "sources": ["shop"],
                    "filters": [{"type": "only", "if": 'event = "Order Completed"'}],
                },
            ],
        }
    )


async def test_sdk_events_reach_a_destination(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    async with webhook() as (url, received, arrived):
        config = workspace(kafka, tmp_path, url)
        async with (
            Gateway(config, registry, port=0) as gateway,
            Processor(config, registry, group_id=f"{kafka.topic_prefix}processor"),
            DeliveryAgent(
                config,
                ["hook"],
                registry,
                consumer_options={
                    "session_timeout_ms": 3000,
                    "heartbeat_interval_ms": 500,
                    "rebalance_timeout_ms": 3000,
                },
            ),
        ):
            client = analytics.Client(
                KEY, host=f"http://127.0.0.1:{gateway.port}", gzip=True, upload_interval=0.05
            )
            client.track("u1", "Order Completed", {"total": 10}, message_id="e2e-order")
            client.track("u2", "Clicked", message_id="e2e-click")
            client.identify("u1", {"plan": "pro"}, message_id="e2e-identify")
            client.track("u3", "Hidden", message_id="e2e-hidden", integrations={"All": False})
            await asyncio.to_thread(client.shutdown)

            orders = await consume(kafka, topics.destination("orders"), expect=1, timeout=30)
            async with asyncio.timeout(30):
                while len({e["messageId"] for e in received}) < 3:
                    arrived.clear()
                    await arrived.wait()
            await asyncio.sleep(0.3)  # a fourth (the disabled one) would arrive by now

    got = {event["messageId"]: event for event in received}
    assert set(got) == {"e2e-order", "e2e-click", "e2e-identify"}
    assert [orjson.loads(r.value)["messageId"] for r in orders] == ["e2e-order"]
    order = got["e2e-order"]
    assert order["properties"] == {"total": 10}
    assert order["receivedAt"] and order["timestamp"] and "writeKey" not in order
    assert order["context"]["library"]["name"] == "analytics-python"
