"""A running gateway per test, on a free port on 127.0.0.1, writing to the test's own topics."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from router.broker.topics import Topics
from router.config import KafkaSettings, Source, Workspace
from router.gateway import Gateway

WEB_KEY = "wk-web"
SERVER_KEY = "wk-server"


def make_workspace(kafka: KafkaSettings) -> Workspace:
    return Workspace(
        kafka=kafka,
        sources=[
            Source(id="web", write_keys=[WEB_KEY]),
            Source(id="server", write_keys=[SERVER_KEY, "wk-server-old"]),
        ],
    )


def basic(key: str) -> dict[str, str]:
    """The Authorization header Segment's clients send: Basic base64("KEY:")."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


class Client:
    """A thin aiohttp client bound to one gateway."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        payload = data if data is not None else orjson.dumps(body)
        async with self.session.post(self.base + path, data=payload, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else {}, dict(resp.headers)

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with self.session.request(method, self.base + path, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else {}, dict(resp.headers)


@pytest.fixture
def topics(kafka: KafkaSettings) -> Topics:
    return Topics(kafka.topic_prefix)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def gateway(kafka: KafkaSettings, registry: CollectorRegistry) -> AsyncIterator[Gateway]:
    async with Gateway(make_workspace(kafka), registry, port=0) as running:
        yield running


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, f"http://127.0.0.1:{gateway.port}")
