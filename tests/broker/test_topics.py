"""Topic creation by roles that start together: every topic exists once, logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from router.broker.topics import ensure_topics
from router.config import KafkaSettings


async def test_roles_creating_overlapping_topics_together_log_each_topic_once(
    kafka: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    names = [kafka.topic_prefix + n for n in ("a", "b", "c", "d")]
    # As ``router run`` starts its roles: each wants some topics, most of them shared.
    wanted = [names, names[:3], names[1:], names[::2]]
    with caplog.at_level(logging.INFO, logger="router.broker.topics"):
        await asyncio.gather(*(ensure_topics(kafka, w) for w in wanted))
        await ensure_topics(kafka, names)  # all exist: nothing to create, nothing said
    logged = [
        name
        for record in caplog.records
        if record.getMessage().startswith("created topics: ")
        for name in record.getMessage().removeprefix("created topics: ").split(", ")
    ]
    assert sorted(logged) == names, "each topic named once, by the call that created it"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        assert set(names) <= set(await admin.list_topics())
    finally:
        await admin.close()
