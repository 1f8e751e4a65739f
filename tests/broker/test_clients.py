"""Consumers made by ``make_consumer`` leave their group when they stop, on Tansu too."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient

from router.broker.clients import make_consumer
from router.broker.topics import ensure_topics
from router.config import KafkaSettings


async def members(kafka: KafkaSettings, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.groups
    return [member[0] for member in described[5]]  # (error, group, state, ..., members)


async def test_a_stopped_consumer_leaves_its_group_at_once(kafka: KafkaSettings) -> None:
    """Otherwise the group keeps the stopped member until its session expires, and the next
    process's join waits for that (Tansu's first generation is 0, for which aiokafka alone
    never sends LeaveGroup)."""
    settings = kafka.model_copy(update={"session_timeout": 3.0})
    topic = f"{kafka.topic_prefix}leave"
    await ensure_topics(settings, [topic])
    group = f"leave-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, topic, group_id=group, role="leaver")
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        assert len(await members(settings, group)) == 1
    finally:
        await consumer.stop()
    assert await members(settings, group) == []


async def test_consumers_wait_for_new_records_as_configured() -> None:
    """``kafka.fetch_max_wait`` reaches every role's consumer: short by default (the embedded
    broker holds an empty fetch for the whole wait), 500 ms as Kafka users would set it."""
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # never started: no broker
    for kafka, expected in (
        (settings, 20),
        (settings.model_copy(update={"fetch_max_wait": 0.5}), 500),
    ):
        consumer = make_consumer(kafka, group_id=None, role="r")
        try:
            assert consumer._fetch_max_wait_ms == expected
        finally:
            await consumer.stop()
