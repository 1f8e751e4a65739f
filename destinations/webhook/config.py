"""Settings of the generic webhook destination."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
MIN_SECRET = 8
# Headers the encoder sets itself; letting settings override them would break the contract.
_RESERVED = frozenset({"content-type", "content-length", "host"})


def _check_header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError("not a valid HTTP header name")
    return name


class WebhookSettings(BaseModel):
    """POST (or PUT/PATCH) the event as JSON to ``url``.

    With ``delivery.batch_size`` above 1 the body is ``{"batch": [event, ...]}``; otherwise
    it is the event object itself (Segment's webhook format). ``headers`` values are treated
    as credentials (masked in dead letters and status records). With ``secret`` set, the
    ``signature_header`` carries ``sha256=<hex HMAC-SHA256 of the body>``.

    ``idempotency_header`` carries the event's ``messageId``; for a batch, a digest of the
    batch's messageIds in order (``batch-sha256-<hex>``), so a re-sent identical batch can be
    recognized without a partner ever dropping a different one; receivers deduplicate single
    events on the ``messageId`` inside the body.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    secret: SecretStr | None = None
    signature_header: str = "X-Signature"
    idempotency_header: str = "Idempotency-Key"
    health_url: AnyHttpUrl | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            _check_header_name(name)
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name} is set by the webhook itself")
            text = secret.get_secret_value()
            # A CR or LF in a value would let config inject extra headers.
            if "\r" in text or "\n" in text:
                raise ValueError(f"the value of header {name} contains a line break")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Said without the length: a message must not narrow down a credential.
        if value is not None and len(value.get_secret_value()) < MIN_SECRET:
            raise ValueError(f"must be at least {MIN_SECRET} characters")
        return value

    @field_validator("signature_header", "idempotency_header")
    @classmethod
    def _header_names(cls, value: str) -> str:
        return _check_header_name(value)
