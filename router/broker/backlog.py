"""How many records consumer groups have not committed yet, read from the broker.

The end of each partition is read from a fetch (its high watermark), not from ListOffsets:
Tansu 0.6 answers ListOffsets for batched writes with the wrong offset, while a fetch's high
watermark is exact on Tansu and on Kafka alike. Committed offsets are read the way a group
member reads them (OffsetFetch through a consumer of that group that never joins it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from router.config import KafkaSettings

#: How long to wait for the high watermarks of every partition before giving up.
WATERMARK_TIMEOUT = 5.0


async def uncommitted(
    settings: KafkaSettings, groups: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """For each consumer group, the records of its ``topics`` past its committed offsets.

    A partition the group never committed counts from its start. Raises ``TimeoutError``
    when the broker does not answer within :data:`WATERMARK_TIMEOUT` seconds.
    """
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-backlog",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=1024,
    )
    await reader.start()
    try:
        await reader.topics()  # metadata of every topic, for partitions_for_topic
        wanted: dict[str, list[TopicPartition]] = {}
        for group, topics in groups.items():
            wanted[group] = [
                TopicPartition(topic, partition)
                for topic in topics
                for partition in sorted(reader.partitions_for_topic(topic) or ())
            ]
        committed = {
            group: await _committed(settings, group, partitions)
            for group, partitions in wanted.items()
        }
        every = sorted({tp for partitions in wanted.values() for tp in partitions})
        if not every:
            return dict.fromkeys(groups, 0)
        reader.assign(every)
        for tp in every:
            # Start at the lowest committed offset: the fetch then reads only unfinished work.
            starts = [committed[g][tp] for g, partitions in wanted.items() if tp in partitions]
            reader.seek(tp, min(starts))
        ends = await _high_watermarks(reader, every)
    finally:
        await reader.stop()
    return {
        group: sum(max(0, ends[tp] - committed[group][tp]) for tp in partitions)
        for group, partitions in wanted.items()
    }


async def _committed(
    settings: KafkaSettings, group: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    # A plain consumer with the group's id, never subscribed: it reads the group's offsets
    # without joining the group (so it never triggers a rebalance of the real members).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-backlog",
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
    finally:
        await consumer.stop()


async def _high_watermarks(
    reader: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    async with asyncio.timeout(WATERMARK_TIMEOUT):
        while True:
            await reader.getmany(timeout_ms=100, max_records=1)
            ends = {tp: reader.highwater(tp) for tp in partitions}
            if all(end is not None for end in ends.values()):
                return {tp: int(end) for tp, end in ends.items()}
