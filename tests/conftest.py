"""Session-wide real parts: one embedded Kafka-protocol broker for the whole test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from router.broker.embedded import EmbeddedBroker
from router.config import KafkaSettings


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of the embedded broker (or of ``TEST_KAFKA_BOOTSTRAP`` if set)."""
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


@pytest.fixture
def kafka(broker: str) -> KafkaSettings:
    """Kafka settings with a topic prefix of its own, so tests never see each other's records."""
    return KafkaSettings(
        bootstrap_servers=broker, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=2
    )
