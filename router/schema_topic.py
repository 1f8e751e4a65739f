"""The ``sources.schema`` topic: processors publish their source schemas, any process reads them.

Each processor instance keeps a :class:`~router.observability.source_schema.SourceSchemas`
over the events it processed and writes, every ``interval`` seconds and when it stops, one
record per source: key ``<sourceId>/<instance>``, value the snapshot (JSON, format in
:mod:`router.observability.source_schema`) with an ``instance`` field added. The topic is
compacted, so it holds the latest snapshot per source and instance. A reader (the ops API's
``GET /api/v1/sources/{id}/schema``) reads the whole topic (:func:`read_source_schemas`) and
merges the instances' snapshots per source.

The instance is the host name by default: on Kubernetes the processor is a StatefulSet, so a
pod keeps its name across restarts, and on start it reads its own last snapshots back
(:meth:`SchemaKeeper.start`) and keeps counting from them instead of overwriting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from router.broker.clients import BatchSender, OutRecord
from router.broker.reading import TopicMissing, read_topic
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.observability.source_schema import SourceSchemas, merge_snapshots

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0


def schema_key(source_id: str, instance: str) -> bytes:
    # Source ids cannot contain "/" (config.ID_PATTERN), so the first one splits the key.
    return f"{source_id}/{instance}".encode()


def snapshot_records(
    topic: str, instance: str, snapshots: dict[str, dict[str, Any]]
) -> list[OutRecord]:
    return [
        OutRecord(
            topic, schema_key(source_id, instance), orjson.dumps({**snap, "instance": instance})
        )
        for source_id, snap in snapshots.items()
    ]


async def read_snapshots(
    settings: KafkaSettings, topics: Topics, *, time_limit: float = 10.0, idle: float = 1.0
) -> dict[bytes, dict[str, Any]]:
    """The latest snapshot per key on ``sources.schema`` (what compaction would keep)."""
    latest: dict[bytes, dict[str, Any]] = {}
    try:
        async for records in read_topic(settings, topics.schema, time_limit=time_limit, idle=idle):
            for record in records:
                if record.key is None:
                    continue
                if record.value is None:  # a tombstone: that instance's snapshot was removed
                    latest.pop(record.key, None)
                    continue
                try:
                    value = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    latest[record.key] = value
    except TopicMissing:
        return {}
    return latest


async def read_source_schemas(
    settings: KafkaSettings, topics: Topics | None = None, *, time_limit: float = 10.0
) -> dict[str, dict[str, Any]]:
    """Every source's schema, merged over the processor instances: ``{source id: snapshot}``.

    For a separate process (the ops API); inside the processor ``Processor.schemas.snapshot(id)``
    answers for what that processor saw.
    """
    topics = topics or Topics(settings.topic_prefix)
    snapshots = await read_snapshots(settings, topics, time_limit=time_limit)
    return merge_snapshots(snapshots.values())


class SchemaKeeper:
    """The processor's source schemas: observed per batch, published periodically."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Topics,
        *,
        instance: str | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.instance = instance or socket.gethostname()
        self.interval = interval
        self.schemas = SourceSchemas()
        self.observe = self.schemas.observe
        self._sender: BatchSender | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def snapshot(self, source_id: str) -> dict[str, Any] | None:
        """This processor's view of a source's schema (the format of sources.schema)."""
        return self.schemas.snapshot(source_id)

    async def start(self, sender: BatchSender) -> None:
        """Publish every ``interval`` from now on, after picking up (in the background, so
        the processor does not wait for it) this instance's last published counts."""
        self._sender = sender
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="source-schema-publisher")

    async def _restore(self) -> None:
        suffix = f"/{self.instance}".encode()
        try:
            previous = await read_snapshots(self.settings, self.topics, time_limit=10.0)
        except KafkaError as exc:
            logger.warning("source schema: previous snapshots not read, counting anew: %s", exc)
            return
        for key, snapshot in previous.items():
            if key.endswith(suffix):
                # Counts are added, so events observed meanwhile are kept too.
                self.schemas.restore(snapshot)

    async def publish(self) -> None:
        """Write the current snapshots now (and return once Kafka acknowledged them)."""
        if self._sender is None:
            return
        records = snapshot_records(self.topics.schema, self.instance, self.schemas.snapshots())
        if records:
            await self._sender.send(records)

    async def _run(self) -> None:
        await self._restore()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            try:
                await self.publish()
            except KafkaError as exc:
                logger.warning("source schema not published, will retry: %s", exc)

    async def stop(self) -> None:
        """Publish a last time (bounded) and stop."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, 10.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
