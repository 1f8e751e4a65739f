"""Settings of the Kafka forward destination: where to write, how to connect, record format."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from router.config import Duration

# Kafka's own rule for topic names (kafka.common.internals.Topic): at most 249 of these.
_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
# Header names the encoder sets itself for the CloudEvents formats.
_CLOUDEVENTS_HEADER = re.compile(r"^(ce_|content-type$)", re.IGNORECASE)

KeyChoice = Literal["user_id", "message_id", "none"]
ValueFormat = Literal["segment", "cloudevents", "cloudevents_binary"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class Sasl(BaseModel):
    """SASL credentials (the mechanisms aiokafka implements without extra system libraries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str = Field(min_length=1)
    password: SecretStr


class Tls(BaseModel):
    """TLS to the brokers: a CA to trust and, for mutual TLS, a client certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pairs(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class CloudEventsOptions(BaseModel):
    """CloudEvents attributes the router cannot take from the event itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``source`` attribute (a URI-reference naming the producer of the events).
    source: str = Field(default="/event-router", min_length=1)
    #: ``type`` is this prefix plus the Segment call type (``segment.track``).
    type_prefix: str = "segment."


class KafkaForwardSettings(BaseModel):
    """Write every event to ``topic`` on the router's own cluster or on another one.

    ``bootstrap_servers`` unset means the router's cluster (``kafka.bootstrap_servers``).
    Records are written with ``acks=all``; an event counts as delivered only once the target
    acknowledged its record.

    ``key``: ``user_id`` (``userId``, else ``anonymousId``: one user's events stay in order in
    one partition), ``message_id`` or ``none`` (spread over partitions).
    ``value_format``: ``segment`` (the event's JSON as is), ``cloudevents`` (CloudEvents 1.0
    JSON, structured content mode) or ``cloudevents_binary`` (the event's JSON as the value,
    CloudEvents attributes as ``ce_*`` headers). ``headers`` are added to every record.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(pattern=_TOPIC)
    bootstrap_servers: str | None = Field(default=None, min_length=1)
    key: KeyChoice = "user_id"
    value_format: ValueFormat = "segment"
    headers: dict[str, str] = Field(default_factory=dict)
    cloudevents: CloudEventsOptions = Field(default_factory=CloudEventsOptions)
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl: Sasl | None = None
    tls: Tls | None = None
    compression: Compression = "none"
    #: Largest request the producer builds (and so the largest record it accepts); the
    #: target's ``message.max.bytes`` may be lower, and then the broker refuses the record.
    max_request_size: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    linger: Duration = 0.005
    #: Kafka's idempotent producer (needs a broker that grants producer ids).
    enable_idempotence: bool = False

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or len(name) > 255:
                raise ValueError("a header name has 1 to 255 characters")
            if _CLOUDEVENTS_HEADER.match(name):
                raise ValueError(f"header {name} is set by the CloudEvents formats")
        return value

    @model_validator(mode="after")
    def _security(self) -> KafkaForwardSettings:
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl and self.sasl is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl settings")
        if not uses_sasl and self.sasl is not None:
            raise ValueError("sasl settings need security_protocol SASL_PLAINTEXT or SASL_SSL")
        uses_tls = self.security_protocol in ("SSL", "SASL_SSL")
        if self.tls is not None and not uses_tls:
            raise ValueError("tls settings need security_protocol SSL or SASL_SSL")
        return self
