"""Reading delivery outcomes back from ``delivery.status`` (one record per request)."""

from __future__ import annotations

import time

from router.config import KafkaSettings
from tests.kafka_helpers import consume, values


async def outcomes(
    kafka: KafkaSettings, topic: str, *, events: int, timeout: float = 30.0
) -> dict[tuple[str, str], str]:
    """``{(destination, messageId): outcome}`` once status records cover ``events`` events.

    The last outcome of an event wins (a retried event is first ``retry``, then ``delivered``).
    """
    deadline = time.monotonic() + timeout
    found: dict[tuple[str, str], str] = {}
    while time.monotonic() < deadline:
        records = values(await consume(kafka, topic, expect=1, timeout=5, settle=0.3))
        found = {
            (record["destination"], message_id): record["outcome"]
            for record in records
            for message_id in record["messageIds"]
        }
        if len(found) >= events:
            return found
    raise AssertionError(f"status records cover {len(found)} of {events} events in {timeout}s")
