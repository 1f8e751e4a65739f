"""Writing records to the target cluster, and what its answers mean for each event.

The producer writes whole batches: each request's records are grouped by partition into
closed batches (``send_batch``), so one batch never mixes records of two requests (the lane
runs ``concurrency`` requests at once over this one producer) and a refusal can only concern
the request it belongs to. A broker refuses or accepts a partition's batch as a whole; when a
batch of several records is refused for something one record can cause (too large, invalid,
policy), each of its records is sent again in a batch of its own, once, to find the one the
broker refuses: the others are delivered and only that event is dead-lettered (the lane
isolates an encoding failure the same way).

Classification of the broker's errors (aiokafka's error classes, Kafka's error codes):

- refused record, permanent, dead-lettered: ``MESSAGE_TOO_LARGE`` (10),
  ``RECORD_LIST_TOO_LARGE`` (18), ``INVALID_TIMESTAMP`` (32), ``UNSUPPORTED_FOR_MESSAGE_FORMAT``
  (43), ``POLICY_VIOLATION`` (44), ``UNKNOWN_SERVER_ERROR`` (-1; also what aiokafka reports for
  ``INVALID_RECORD``, 87, which it does not know), and our own check that a record fits in
  ``max_request_size``;
- refused topic, permanent: ``TOPIC_AUTHORIZATION_FAILED`` (29), ``CLUSTER_AUTHORIZATION_FAILED``
  (31), ``INVALID_TOPIC_EXCEPTION`` (17), SASL authentication failures;
- everything else is worth another attempt (timeouts, connections, leader elections,
  ``NOT_ENOUGH_REPLICAS``, an unknown topic that may yet be created ...).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.helpers import create_ssl_context

from destinations.base import (
    ConnectionFailed,
    DestinationError,
    InvalidSettings,
    PermanentError,
    RequestTimeout,
    RetryableError,
)
from destinations.kafka.config import KafkaForwardSettings
from destinations.kafka.encoder import ForwardBatch, ForwardRecord
from router.broker.partitioning import key_partition

logger = logging.getLogger(__name__)

#: Bytes a record batch adds around its records (Kafka's v2 batch header is 61 bytes), plus
#: a produce request's own header; a record must fit in ``max_request_size`` with them.
_REQUEST_OVERHEAD = 256
#: Largest batch built (the producer sends one batch per partition per request).
_MAX_BATCH_BYTES = 1024 * 1024

#: Errors one record can cause: worth finding which record of a refused batch it was.
RECORD_REFUSALS: Mapping[type[Exception], str] = {
    kafka_errors.MessageSizeTooLargeError: "record_too_large",
    kafka_errors.RecordListTooLargeError: "record_too_large",
    kafka_errors.RecordTooLargeError: "record_too_large",
    kafka_errors.InvalidTimestampError: "invalid_timestamp",
    kafka_errors.UnsupportedForMessageFormatError: "unsupported_format",
    kafka_errors.PolicyViolationError: "policy_violation",
    kafka_errors.UnknownError: "record_refused",
}
#: Errors about the topic or the credentials: every record of the topic fails alike.
TOPIC_REFUSALS: Mapping[type[Exception], str] = {
    kafka_errors.TopicAuthorizationFailedError: "not_authorized",
    kafka_errors.ClusterAuthorizationFailedError: "not_authorized",
    kafka_errors.InvalidTopicError: "invalid_topic",
    kafka_errors.SaslAuthenticationFailed: "authentication_failed",
    kafka_errors.AuthenticationFailedError: "authentication_failed",
    kafka_errors.UnsupportedSaslMechanismError: "authentication_failed",
}


class RecordRefused(PermanentError):
    """The target will never take this record (size, validity, policy)."""

    reason = "record_refused"


class TopicRefused(PermanentError):
    """The target refuses writes to the topic (authorization, invalid name)."""

    reason = "not_authorized"


class KafkaRetryable(RetryableError):
    """A transient condition of the target cluster."""

    reason = "kafka_error"


@dataclass(frozen=True, slots=True)
class ForwardResult:
    """What the target answered for each record of a :class:`ForwardBatch`.

    ``written[i]`` is ``(partition, offset)`` once record ``i`` is acknowledged, else None and
    ``errors`` holds why (index -> the error, as raised by the client or mapped from the
    broker's code). ``isolated`` counts records sent again alone to find a refused one.
    """

    topic: str
    written: tuple[tuple[int, int] | None, ...]
    errors: tuple[tuple[int, BaseException], ...]
    elapsed: float
    isolated: int = 0


def _snake(name: str) -> str:
    name = name.removesuffix("Error").removesuffix("Exception")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def classify(error: BaseException, topic: str) -> DestinationError:
    """The :class:`DestinationError` for one record's failure (see the module docstring)."""
    if isinstance(error, DestinationError):
        return error
    name = type(error).__name__
    detail = str(error) or name
    for kind, reason in RECORD_REFUSALS.items():
        if isinstance(error, kind):
            return RecordRefused(f"{topic} refused the record ({name}): {detail}", reason=reason)
    for kind, reason in TOPIC_REFUSALS.items():
        if isinstance(error, kind):
            return TopicRefused(f"{topic}: {name}: {detail}", reason=reason)
    if isinstance(error, kafka_errors.KafkaTimeoutError | TimeoutError):
        return RequestTimeout(f"{topic}: not acknowledged in time ({detail})")
    if isinstance(error, kafka_errors.KafkaConnectionError | OSError):
        return ConnectionFailed(f"{topic}: {name}: {detail}")
    return KafkaRetryable(f"{topic}: {name}: {detail}", reason=_snake(name)[:40] or "kafka_error")


def is_record_refusal(error: BaseException) -> bool:
    return isinstance(error, tuple(RECORD_REFUSALS))


def producer_options(
    settings: KafkaForwardSettings, *, bootstrap: str, client_id: str, timeout: float
) -> dict[str, Any]:
    """aiokafka producer options for these settings (``acks=all``, always)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "linger_ms": round(settings.linger * 1000),
        "max_request_size": settings.max_request_size,
        "max_batch_size": min(_MAX_BATCH_BYTES, settings.max_request_size),
        # aiokafka's own waits (metadata, acknowledgements) end within one attempt.
        "request_timeout_ms": max(1000, round(timeout * 1000)),
        "security_protocol": settings.security_protocol,
    }
    if settings.compression != "none":
        options["compression_type"] = settings.compression
    if settings.sasl is not None:
        options["sasl_mechanism"] = settings.sasl.mechanism
        options["sasl_plain_username"] = settings.sasl.username
        options["sasl_plain_password"] = settings.sasl.password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = tls_context(settings)
    return options


def tls_context(settings: KafkaForwardSettings) -> ssl.SSLContext:
    """The TLS context for the brokers: the system's trust store unless ``ca_file`` is set."""
    tls = settings.tls
    if tls is None:
        return ssl.create_default_context()
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            password=tls.key_password.get_secret_value() if tls.key_password else None,
        )
    except (OSError, ssl.SSLError) as exc:
        # Says which file, never a password.
        raise InvalidSettings(f"tls: cannot load certificates: {exc.strerror or exc}") from None
    context.check_hostname = tls.check_hostname
    return context


class KafkaSender:
    """One producer for one destination, started on first use if the target was down."""

    def __init__(
        self, settings: KafkaForwardSettings, *, bootstrap: str, client_id: str, timeout: float
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.options = producer_options(
            settings, bootstrap=bootstrap, client_id=client_id, timeout=timeout
        )
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._rng = random.Random()

    async def start(self) -> None:
        """Connect now if the target answers; otherwise the first send connects.

        Never raises for an unreachable cluster: one destination's cluster being down must
        not keep the agent (and every other destination) from starting.
        """
        try:
            await self._ready()
        except DestinationError as exc:
            logger.warning("kafka destination: %s (connecting again on the first send)", exc)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _ready(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(**self.options)
                try:
                    async with asyncio.timeout(self.timeout):
                        await producer.start()
                except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise classify(exc, self.settings.topic) from exc
                self._producer = producer
        return self._producer

    async def partition_count(self) -> int:
        producer = await self._ready()
        topic = self.settings.topic
        try:
            async with asyncio.timeout(self.timeout):
                partitions = await producer.partitions_for(topic)
        except (kafka_errors.KafkaTimeoutError, TimeoutError) as exc:
            raise RequestTimeout(
                f"{topic}: no partition metadata within {self.timeout:g}s (does the topic "
                "exist? a cluster without automatic topic creation needs it created)"
            ) from exc
        except kafka_errors.KafkaError as exc:
            raise classify(exc, topic) from exc
        return len(partitions)

    async def send(self, batch: ForwardBatch) -> ForwardResult:
        started = time.monotonic()
        producer = await self._ready()
        deadline = asyncio.get_running_loop().time() + self.timeout
        count = await self.partition_count()
        outcomes: list[Outcome] = [None] * len(batch.records)
        shared = await self._write(
            producer, batch, range(len(batch.records)), count, outcomes, deadline
        )
        if shared:
            # Refused with other records in one batch: send each again in a batch of its own
            # (all at once, with a fresh time limit) to find the record(s) refused alone.
            again = asyncio.get_running_loop().time() + self.timeout
            await self._write(producer, batch, shared, count, outcomes, again, alone=True)
        written: list[tuple[int, int] | None] = []
        errors: list[tuple[int, BaseException]] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, tuple):
                written.append(outcome)
                continue
            written.append(None)
            errors.append((index, outcome or TimeoutError("not acknowledged in time")))
        return ForwardResult(
            topic=batch.topic,
            written=tuple(written),
            errors=tuple(errors),
            elapsed=time.monotonic() - started,
            isolated=len(shared),
        )

    async def _write(
        self,
        producer: AIOKafkaProducer,
        batch: ForwardBatch,
        indexes: Sequence[int],
        partitions: int,
        outcomes: list[Outcome],
        deadline: float,
        *,
        alone: bool = False,
    ) -> list[int]:
        """Send ``batch.records[indexes]`` in closed batches and fill ``outcomes`` for them.

        ``alone``: one record per batch. Returns the indexes refused for a record refusal in
        a batch of several records.
        """
        limit = self.settings.max_request_size - _REQUEST_OVERHEAD
        sticky = self._rng.randrange(partitions)  # keyless records: one partition per request
        grouped: dict[int, list[int]] = defaultdict(list)
        for index in indexes:
            record = batch.records[index]
            if record.size > limit:
                outcomes[index] = kafka_errors.RecordTooLargeError(
                    f"the record is {record.size} bytes; max_request_size leaves room for "
                    f"{limit} bytes of record"
                )
                continue
            partition = sticky if record.key is None else key_partition(record.key, partitions)
            grouped[partition].append(index)
        pending: list[tuple[asyncio.Future[Any], list[int]]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for partition, members in grouped.items():
                    for builder, chunk in _batches(producer, batch.records, members, alone):
                        future = await producer.send_batch(
                            builder, batch.topic, partition=partition
                        )
                        pending.append((future, chunk))
        except TimeoutError:
            pass  # what was not submitted stays None: not acknowledged in time
        except (kafka_errors.KafkaError, OSError) as exc:
            submitted = {index for _, chunk in pending for index in chunk}
            for members in grouped.values():
                for index in members:
                    if index not in submitted:
                        outcomes[index] = exc
        if pending:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait([future for future, _ in pending], timeout=remaining)
        shared: list[int] = []
        for future, chunk in pending:
            if not future.done():
                continue  # stays None: not acknowledged in time (it may still be, later)
            error = future.exception()
            if error is None:
                metadata = future.result()
                for position, index in enumerate(chunk):
                    outcomes[index] = (metadata.partition, metadata.offset + position)
                continue
            for index in chunk:
                outcomes[index] = error
            if len(chunk) > 1 and is_record_refusal(error):
                shared.extend(chunk)
        return shared


Outcome = tuple[int, int] | BaseException | None


def _batches(
    producer: AIOKafkaProducer,
    records: Sequence[ForwardRecord],
    members: Sequence[int],
    alone: bool = False,
) -> list[tuple[Any, list[int]]]:
    """Closed batches holding ``records[members]`` in order, each with the indexes it holds."""
    batches: list[tuple[Any, list[int]]] = []
    builder = producer.create_batch()
    chunk: list[int] = []
    for index in members:
        record = records[index]
        if (alone and chunk) or not _append(builder, record):
            # One record per batch, or full (an empty batch takes any first record).
            builder.close()
            batches.append((builder, chunk))
            builder, chunk = producer.create_batch(), []
            if not _append(builder, record):
                raise RuntimeError("an empty record batch refused a record")
        chunk.append(index)
    builder.close()
    batches.append((builder, chunk))
    return batches


def _append(builder: Any, record: ForwardRecord) -> bool:
    appended = builder.append(
        timestamp=None, key=record.key, value=record.value, headers=list(record.headers)
    )
    return appended is not None
