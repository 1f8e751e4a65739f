"""Session-wide real parts: one embedded Kafka-protocol broker for the whole test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from router.broker.embedded import EmbeddedBroker
from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.postgres_server import PostgresServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the broker (directly or through another fixture) is an integration
    test: ``-m "not integration"`` then runs everything that needs no broker."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of the embedded broker (or of ``TEST_KAFKA_BOOTSTRAP`` if set)."""
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server (Debian's binaries, a temporary data directory) per run."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """A fake partner API on 127.0.0.1 that records requests and fails on demand."""
    async with Sink() as partner:
        yield partner


@pytest.fixture
def kafka(broker: str) -> KafkaSettings:
    """Kafka settings with a topic prefix of its own, so tests never see each other's records."""
    return KafkaSettings(
        bootstrap_servers=broker, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=2
    )
