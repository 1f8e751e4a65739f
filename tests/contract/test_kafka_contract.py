from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from aiokafka import errors as kafka_errors

from destinations.kafka import ForwardResult
from tests.contract.base import DestinationContract


class TestKafkaContract(DestinationContract):
    """Kafka answers are per-record errors, not HTTP statuses: ``http = False``.

    What replaces the status table (refused record, refused topic, transient) is
    ``tests/destinations/test_kafka.py::test_write_errors_classified``, and the writes
    themselves are tested against the embedded broker and a second cluster there.
    """

    type_name = "kafka"
    http = False
    valid_settings: ClassVar[dict[str, Any]] = {
        "topic": "segment.events",
        "bootstrap_servers": "kafka-a:9093,kafka-b:9093",
        "security_protocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-256", "username": "router", "password": "sasl-pw-4711"},
        "headers": {"origin": "event-router"},
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "topic"),
        ({"topic": "has space"}, "topic"),
        ({"topic": "t", "key": "email"}, "key"),
        ({"topic": "t", "value_format": "avro"}, "value_format"),
        ({"topic": "t", "compression": "brotli"}, "compression"),
        (
            {"topic": "t", "security_protocol": "SASL_SSL", "sasl": {"username": "u"}},
            "sasl.password",
        ),
        ({"topic": "t", "headers": {"ce_type": "x"}}, "headers"),
        ({"topic": "t", "max_request_size": 10}, "max_request_size"),
    ]
    secrets: ClassVar[list[str]] = ["sasl-pw-4711"]
    batch_sizes = (1, 50, 500)

    def response(
        self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"{}"
    ) -> ForwardResult:
        # A broker's error text may echo what it was sent: it must be masked like a body.
        error = kafka_errors.UnknownError(body.decode(errors="replace"))
        return ForwardResult(
            topic="segment.events", written=(None,), errors=((0, error),), elapsed=0.01
        )
