"""Workspaces, status records and an API client for the console's tests; waits are bounded."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from router.broker.topics import Topics
from router.config import KafkaSettings, Workspace
from router.delivery.records import iso
from router.ops.console import Console
from router.ops.server import OpsServer
from router.workspace import validate_workspace

TOKEN = "test-admin-token-0123456789"
WRITE_KEY = "wk-web"


def unique_kafka(kafka: KafkaSettings) -> KafkaSettings:
    return kafka.model_copy(update={"client_id": f"t-{uuid.uuid4().hex[:8]}"})


def workspace(
    kafka: KafkaSettings,
    state: Path,
    destinations: Sequence[dict[str, Any]],
    *,
    sources: Sequence[dict[str, Any]] | None = None,
    plans: Sequence[dict[str, Any]] | None = None,
    token: str | None = TOKEN,
    **ops: Any,
) -> Workspace:
    document: dict[str, Any] = {
        "kafka": kafka.model_dump(exclude_none=True),
        "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
        "ops": {**({"admin_token": token} if token else {}), **ops},
        "sources": list(sources or [{"id": "web", "write_keys": [WRITE_KEY]}]),
        "destinations": list(destinations),
    }
    if plans:
        document["tracking_plans"] = list(plans)
    return validate_workspace(document)


def hook(dest_id: str, url: str, **extra: Any) -> dict[str, Any]:
    delivery = {"backoff_min": "50ms", "backoff_max": "200ms", "timeout": "1s"}
    delivery.update(extra.pop("delivery", {}))
    return {
        "id": dest_id,
        "name": f"Hook {dest_id}",
        "type": "webhook",
        "sources": ["web"],
        "settings": {"url": url},
        "delivery": delivery,
        **extra,
    }


def status_v2(
    destination: str,
    outcome: str,
    message_ids: Sequence[str | None],
    *,
    at: float | None = None,
    attempts: Sequence[int] | None = None,
    latency_ms: Sequence[float | None] | None = None,
    reason: str | None = None,
    status: int | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``delivery.status`` record value in format 2 (see router/ops/status.py)."""
    moment = time.time() if at is None else at
    return {
        "v": 2,
        "destination": destination,
        "destinationType": "webhook",
        "outcome": outcome,
        "reason": reason,
        "status": status,
        "duration": 0.01,
        "at": iso(moment),
        "dueAt": iso(moment + 5) if outcome == "retry" else None,
        "count": len(message_ids),
        "messageIds": list(message_ids),
        "attempts": list(attempts or [1] * len(message_ids)),
        "latencyMs": list(latency_ms) if latency_ms is not None else None,
        "error": error,
    }


def failure(reason: str, status: int, *, event: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "reason": reason,
        "message": f"HTTP {status} from 127.0.0.1",
        "retriable": status >= 500,
        "request": {
            "method": "POST",
            "url": "http://127.0.0.1/hook",
            "headers": {"Authorization": "***"},
            "body": '{"type":"track"}',
        },
        "response": {"status": status, "headers": {}, "body": f'{{"error": "{reason}"}}'},
        "event": event or {"type": "track", "event": "Order Completed"},
    }


class Api:
    """The console's API as the page uses it."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = TOKEN) -> None:
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> Any:
        async with self.session.get(
            self.base + path, params=params, headers=self.headers
        ) as response:
            body = await response.read()
            assert response.status == 200, (response.status, body[:500])
            return orjson.loads(body)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kwargs) as response:
            body = await response.read()
            return response.status, orjson.loads(body) if body else None

    async def post(self, path: str, body: Any) -> Any:
        async with self.session.post(self.base + path, json=body, headers=self.headers) as response:
            data = await response.read()
            assert response.status == 200, (response.status, data[:500])
            return orjson.loads(data)


async def eventually(
    check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.2
) -> Any:
    """Await ``check()`` until it returns something truthy (or raise with its last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s; last value: {last!r}")


@asynccontextmanager
async def running_console(
    ws: Workspace, store: Path, registry: CollectorRegistry | None = None
) -> AsyncIterator[tuple[Console, Api]]:
    registry = registry or CollectorRegistry()
    console = Console(ws, registry, store_path=store)
    server = OpsServer(registry, [console], port=0, console=console)
    async with console, server, aiohttp.ClientSession() as session:
        yield console, Api(session, f"http://127.0.0.1:{server.port}")


def topics(kafka: KafkaSettings) -> Topics:
    return Topics(kafka.topic_prefix)


@asynccontextmanager
async def running_router(
    ws: Workspace, store: Path, destinations: Sequence[str] | None = None
) -> AsyncIterator[tuple[Console, Api, int]]:
    """Processor, one agent for ``destinations`` (default: all), the console and its server;
    yields (console, api, ops port) once every lane has its partitions."""
    from router.delivery.agent import DeliveryAgent
    from router.processor import Processor

    registry = CollectorRegistry()
    processor = Processor(ws, registry)
    agent = DeliveryAgent(
        ws,
        list(destinations or [d.id for d in ws.destinations]),
        registry,
        consumer_options={
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
            "rebalance_timeout_ms": 3000,
        },
        commit_interval=0.2,
        grace=5.0,
    )
    console = Console(ws, registry, store_path=store)
    server = OpsServer(registry, [processor, agent, console], port=0, console=console)
    async with processor, agent, console, server, aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 30
        while not all(lane.fetcher.consumer.assignment() for lane in agent.lanes.values()):
            assert time.monotonic() < deadline, "lanes never got partitions"
            await asyncio.sleep(0.1)
        yield console, Api(session, f"http://127.0.0.1:{server.port}"), server.port
