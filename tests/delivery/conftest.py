"""Fixtures for delivery integration tests: a fake partner and a per-test Kafka namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from router.config import KafkaSettings
from tests.delivery.helpers import unique_kafka
from tests.delivery.sink import Sink


@pytest.fixture
async def sink2() -> AsyncIterator[Sink]:
    """A second partner, for tests that compare two destinations (``sink`` is in tests/)."""
    async with Sink() as partner:
        yield partner


@pytest.fixture
def kafka_ns(kafka: KafkaSettings) -> KafkaSettings:
    return unique_kafka(kafka)
