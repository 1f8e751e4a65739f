"""Segment events -> one webhook request (pure: same events, same bytes)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import orjson

from destinations.base import EncodeError, Event, PartnerRequest, event_message_ids, raw_events
from destinations.webhook.config import WebhookSettings

CONTENT_TYPE = "application/json"


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes, as GitHub and Stripe do it."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def batch_idempotency_key(message_ids: Sequence[str]) -> str:
    """One key for a batch: a digest of its messageIds in order.

    The same batch sent again gets the same key; a batch with other events gets another one,
    so a partner deduplicating on the key never drops events it has not seen. (The first
    messageId alone would do exactly that after a re-batching; the full list can exceed
    header size limits.) Receivers deduplicate single events on ``messageId`` in the body.
    """
    digest = hashlib.sha256("\n".join(message_ids).encode()).hexdigest()
    return f"batch-sha256-{digest}"


class WebhookEncoder:
    """Builds the request; ``batched`` fixes the body shape whatever the batch's length."""

    def __init__(self, settings: WebhookSettings, *, batched: bool) -> None:
        self.settings = settings
        self.batched = batched
        self._url = str(settings.url)
        self._secret = settings.secret.get_secret_value().encode() if settings.secret else None
        self._static_headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", CONTENT_TYPE),
            *((name, value.get_secret_value()) for name, value in settings.headers.items()),
        )

    def encode(self, events: Sequence[Event]) -> PartnerRequest:
        if not events:
            raise ValueError("nothing to encode")
        if not self.batched and len(events) != 1:
            raise ValueError("an unbatched webhook encodes one event per request")
        message_ids = tuple(event_message_ids(events))
        raw = raw_events(events)
        if raw is not None:
            # The events as read from Kafka are already their JSON: splice, do not re-encode.
            body = b'{"batch":[' + b",".join(raw) + b"]}" if self.batched else raw[0]
        else:
            try:
                body = orjson.dumps({"batch": list(events)} if self.batched else events[0])
            except orjson.JSONEncodeError as exc:
                raise EncodeError(f"event is not JSON-serializable: {exc}") from exc
        headers = list(self._static_headers)
        if self.batched:
            headers.append((self.settings.idempotency_header, batch_idempotency_key(message_ids)))
        elif message_ids[0]:
            headers.append((self.settings.idempotency_header, message_ids[0]))
        if self._secret is not None:
            headers.append((self.settings.signature_header, sign(self._secret, body)))
        return PartnerRequest(
            method=self.settings.method,
            url=self._url,
            headers=tuple(headers),
            body=body,
            message_ids=message_ids,
        )
