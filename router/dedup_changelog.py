"""The dedup changelog: written with every batch, read back when a partition is assigned.

``dedup.changelog`` has one partition per dedup store (the partition count of ``events.raw``).
Each processor batch writes, per store it added keys to, one record (a few for very large
batches) holding those keys, their first-seen time and the input offsets the batch ends at
(format: ``router.pipeline.dedup.encode_entries``). It goes out with the batch's outputs and
the batch is finalized only once both are acknowledged, so the hot path pays one record per
partition per batch and no extra round trip.

When a processor is assigned partition ``p`` it keeps ``p`` paused on both input topics while
it reads changelog partition ``p`` from the offset its local store has reached (kept in the
store itself, atomically with the keys), or from the start of the retained log when it has
no store, up to the end; then it resumes ``p``. What a processor's volume keeps (its stores,
with their changelog offsets) is what it does not have to read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from router.broker.topics import Topics
from router.config import KafkaSettings
from router.pipeline.dedup import Deduplicator, PendingKeys, decode_entry, encode_entries

logger = logging.getLogger(__name__)

# Seconds of empty fetches below the end offset before a restore stops waiting for more.
_GIVE_UP_IDLE = 10.0


class DedupChangelog:
    """Writes batches' first-seen keys and restores stores from them."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topics: Topics,
        dedup: Deduplicator,
        kafka: KafkaSettings,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.topic = topics.dedup_changelog
        self.dedup = dedup
        self.kafka = kafka

    async def submit(
        self, pending: PendingKeys, stamp: float, following: Mapping[TopicPartition, int]
    ) -> asyncio.Future[dict[int, int]]:
        """Queue one entry per partition in ``pending``; resolves to partition -> next offset.

        ``following`` holds the batch's next input offset per topic partition it read.
        """
        futures: list[tuple[int, asyncio.Future[RecordMetadata]]] = []
        raw, rekeyed = self.topics.raw, self.topics.rekeyed
        for partition, keys in pending.items():
            if not keys:
                continue  # every first sighting of this partition was dead-lettered
            raw_next = following.get(TopicPartition(raw, partition), -1)
            rekeyed_next = following.get(TopicPartition(rekeyed, partition), -1)
            # One record per produce batch: the next offset is then the record's offset + 1,
            # and the end offsets reported by every broker (the embedded one included) agree.
            for value in encode_entries(stamp, raw_next, rekeyed_next, keys):
                batch = self.producer.create_batch()
                batch.append(key=None, value=value, timestamp=None)
                batch.close()
                futures.append(
                    (
                        partition,
                        await self.producer.send_batch(batch, self.topic, partition=partition),
                    )
                )
        return asyncio.ensure_future(_next_offsets(futures))

    async def restore(self, committed: Mapping[int, tuple[int, int]]) -> int:
        """Bring the stores of ``committed``'s partitions up to the changelog's end.

        ``committed`` maps a partition to the group's committed offsets on (events.raw,
        events.rekeyed), -1 for none. Returns the number of keys written.
        """
        if not committed:
            return 0
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            client_id=f"{self.kafka.client_id}-processor-restore",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            # An entry holds up to 512 KiB of keys: bound what is buffered at once.
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=16 << 20,
        )
        await reader.start()
        written = 0
        try:
            tps = {TopicPartition(self.topic, p): p for p in committed}
            reader.assign(list(tps))
            begin = await reader.beginning_offsets(list(tps))
            end = await reader.end_offsets(list(tps))
            reading: set[TopicPartition] = set()
            for tp, partition in tps.items():
                start = self.dedup.checkpoint(partition)
                # No store yet, entries it has not seen expired, or a changelog newer than the
                # store (the topic was recreated): read everything retained.
                if start is None or not begin[tp] <= start <= end[tp]:
                    start = begin[tp]
                if start < end[tp]:
                    reader.seek(tp, start)
                    reading.add(tp)
                else:
                    self.dedup.apply(partition, (), committed[partition], start)
            idle_since = time.monotonic()
            while reading:
                fetched = await reader.getmany(*reading, timeout_ms=200, max_records=64)
                if fetched:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > _GIVE_UP_IDLE:
                    # The broker reported an end it does not serve up to: what was read is
                    # applied, and the store's checkpoint marks where a later restore resumes.
                    logger.warning(
                        "dedup restore: nothing more to read below the end offsets of %s",
                        ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(reading)),
                    )
                    break
                for tp, records in fetched.items():
                    partition = tps[tp]
                    entries = [e for e in map(decode_entry, (r.value for r in records)) if e]
                    written += self.dedup.apply(
                        partition, entries, committed[partition], records[-1].offset + 1
                    )
                for tp in list(reading):
                    # Done at the end offset, once a fetch there finds nothing more.
                    if tp not in fetched and await reader.position(tp) >= end[tp]:
                        reading.discard(tp)
        finally:
            await reader.stop()
        return written


async def _next_offsets(
    futures: list[tuple[int, asyncio.Future[RecordMetadata]]],
) -> dict[int, int]:
    following: dict[int, int] = {}
    written = await asyncio.gather(*(future for _, future in futures))
    for (partition, _), metadata in zip(futures, written, strict=True):
        following[partition] = max(following.get(partition, 0), metadata.offset + 1)
    return following
