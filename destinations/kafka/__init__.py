"""Forward events to a Kafka topic, on the router's own cluster or another one.

Every event becomes one record (key, value and headers as the settings say); an event is
delivered once the target acknowledged its record with ``acks=all``. A record the target
refuses (too large, invalid, against a policy) dead-letters that event alone; a refused topic
(authorization) dead-letters the events of the request; anything transient is retried by the
lane through ``dest.<id>.retry``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiokafka import codec

from destinations.base import (
    DestinationError,
    DestinationPlugin,
    Encoded,
    Event,
    InvalidSettings,
    PluginContext,
)
from destinations.kafka.config import KafkaForwardSettings
from destinations.kafka.encoder import ForwardBatch, KafkaEncoder
from destinations.kafka.sender import ForwardResult, KafkaSender, classify
from destinations.registry import register
from router.config import Destination

__all__ = ["ForwardBatch", "ForwardResult", "KafkaDestination", "KafkaForwardSettings"]

_CODECS = {
    "gzip": codec.has_gzip,
    "snappy": codec.has_snappy,
    "lz4": codec.has_lz4,
    "zstd": codec.has_zstd,
}


@register("kafka")
class KafkaDestination(DestinationPlugin[KafkaForwardSettings, ForwardBatch, ForwardResult]):
    settings_model = KafkaForwardSettings
    summary = "write each event as a record to a Kafka topic (this cluster or another one)"
    deletion_unsupported = (
        "records already written to another Kafka topic cannot be deleted one by one: its "
        "consumers must honour the regulation"
    )
    #: Records per request; the producer batches them per partition.
    default_batch_size: ClassVar[int] = 500

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        settings = self.settings
        bootstrap = settings.bootstrap_servers or (
            context.kafka.bootstrap_servers if context.kafka else None
        )
        if not bootstrap:
            raise InvalidSettings(
                f"destination {destination.id!r}: no bootstrap_servers, and the router's own "
                "Kafka cluster is not known",
                [("bootstrap_servers", "required when the router's cluster is not known")],
            )
        if settings.compression != "none" and not _CODECS[settings.compression]():
            raise InvalidSettings(
                f"destination {destination.id!r}: compression {settings.compression} needs "
                f"its codec: pip install 'aiokafka[{settings.compression}]'",
                [("compression", "codec not installed")],
            )
        client_prefix = context.kafka.client_id if context.kafka else "event-router"
        self.encoder = KafkaEncoder(settings)
        self.sender = KafkaSender(
            settings,
            bootstrap=bootstrap,
            client_id=f"{client_prefix}-forward-{destination.id}",
            timeout=self.timeout,
        )

    async def start(self) -> None:
        await self.sender.start()

    async def stop(self) -> None:
        await self.sender.stop()

    async def health_check(self) -> tuple[bool, str]:
        topic = self.settings.topic
        try:
            count = await self.sender.partition_count()
        except DestinationError as exc:
            return False, self.describe_text(exc.message)
        return True, f"topic {topic} has {count} partition(s) at {self.sender.bootstrap}"

    def encode(self, events: Sequence[Event]) -> Encoded[ForwardBatch]:
        return self.encoder.encode(events)

    async def send(self, request: ForwardBatch) -> ForwardResult:
        return await self.sender.send(request)

    def check(
        self, request: ForwardBatch, response: ForwardResult
    ) -> Mapping[int, DestinationError]:
        """Per-record errors (indexes into ``request.covers``); raise when none was written.

        A request whose every record failed for one reason raises that reason for all of
        them (a down cluster, a refused topic); otherwise each failed record has its own.
        """
        if not response.errors:
            return {}
        errors = {index: classify(error, request.topic) for index, error in response.errors}
        if len(errors) == len(request.records):
            reasons = {(type(e), e.reason) for e in errors.values()}
            if len(reasons) == 1:
                first = next(iter(errors.values()))
                first.request, first.response = request, response
                raise first
        for error in errors.values():
            error.response = response
        return errors

    def describe_request(
        self, request: ForwardBatch, *, limit: int | None = None
    ) -> dict[str, Any]:
        bound = self.detail_body_limit if limit is None else limit
        first = request.records[0] if request.records else None
        sample = first.value[:bound].decode("utf-8", "replace") if first is not None else ""
        return {
            "bootstrap": self.describe_text(self.sender.bootstrap),
            "topic": request.topic,
            "records": len(request.records),
            "bytes": sum(record.size for record in request.records),
            "messageIds": list(request.message_ids[:20]),
            "firstValue": self.describe_text(sample),
        }

    def describe_response(
        self, response: ForwardResult, *, limit: int | None = None
    ) -> dict[str, Any]:
        bound = self.detail_body_limit if limit is None else limit
        errors = [
            {"record": index, "error": self.describe_text(f"{type(e).__name__}: {e}")[:bound]}
            for index, e in response.errors[:20]
        ]
        return {
            "topic": response.topic,
            "acknowledged": sum(1 for w in response.written if w is not None),
            "failed": len(response.errors),
            "isolated": response.isolated,
            "errors": errors,
            "elapsed": round(response.elapsed, 6),
        }
