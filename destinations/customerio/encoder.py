"""Segment events -> Customer.io Track API requests (pure: same events, same bytes).

What the Track API takes (Customer.io's Track API reference):

- ``POST /api/v2/batch`` with ``{"batch": [operation, ...]}``: each operation changes one
  person (``type: person``; ``identifiers`` is exactly one of ``id``, ``email``, ``phone``,
  ``cio_id``; ``action`` is ``identify``, ``event``, ``page``, ``screen``, ``delete`` ...) or
  one object (``type: object``; ``identifiers`` ``{object_type_id, object_id}``). A request
  must be smaller than 500 KB and each operation 32 KB or smaller.
- ``POST /api/v1/events`` with one event for a person not known yet (``anonymous_id``):
  the v2 operations have no anonymous identifier. Customer.io attaches those events to the
  person whose ``anonymous_id`` attribute matches later (identify sets it from Segment's
  ``anonymousId``).
- Timestamps are UNIX seconds. Event operations take an ``id`` that must be a ULID;
  Customer.io drops an event whose ``id`` it has already seen.

Mapping: identify -> person ``identify`` with the traits as attributes; track -> person
``event``; page -> person ``page`` named by the page URL (what Customer.io segments on);
screen -> person ``screen``; group -> object ``identify`` with the user related to it
(``cio_relationships``). The same event always gets the same ``id`` (a ULID made from its
``timestamp`` and ``messageId``), so a redelivery is deduplicated by Customer.io.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from ulid import ULID

from destinations.base import DestinationError, Encoded, EncodeError, Event, PartnerRequest
from destinations.customerio.config import CustomerIOSettings
from destinations.segment import identifier, object_copy

BATCH_PATH = "/api/v2/batch"
ANONYMOUS_EVENT_PATH = "/api/v1/events"
REGION_PATH = "/api/v1/accounts/region"
#: The documented limits, counted in decimal kilobytes so that either reading of "KB" holds.
MAX_REQUEST_BYTES = 500_000
MAX_OPERATION_BYTES = 32_000
_BATCH_OPEN = b'{"batch":['
_BATCH_CLOSE = b"]}"

OptionsFor = Callable[[Event], Mapping[str, Any]]


class MissingIdentity(EncodeError):
    """The event names nobody Customer.io can attach it to."""

    reason = "missing_identity"


class OperationTooLarge(EncodeError):
    """One operation is over Customer.io's 32 KB limit; no split can send it."""

    reason = "too_large"


def unix_seconds(event: Event) -> int | None:
    """The event's ``timestamp`` (else ``receivedAt``) in whole UNIX seconds; None if neither."""
    for field in ("timestamp", "receivedAt"):
        moment = _parse(event.get(field))
        if moment is not None:
            return int(moment.timestamp())
    return None


def event_ulid(event: Event) -> str:
    """A ULID that is the same for every delivery of this event.

    The time part is the event's ``timestamp`` in milliseconds (so ids sort by time, as ULIDs
    should); the 80 random bits are the first 10 bytes of SHA-256 of its ``messageId``.
    """
    moment = _parse(event.get("timestamp")) or _parse(event.get("receivedAt"))
    millis = max(0, int(moment.timestamp() * 1000)) if moment else 0
    digest = hashlib.sha256(str(event.get("messageId") or "").encode()).digest()
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + digest[:10]))


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class CustomerIOEncoder:
    """Builds Track API requests for a batch; see the module docstring for the mapping."""

    def __init__(self, settings: CustomerIOSettings, *, options_for: OptionsFor) -> None:
        self.settings = settings
        self.options_for = options_for
        self.base_url = settings.base_url
        credentials = f"{settings.site_id.get_secret_value()}:{settings.api_key.get_secret_value()}"
        self.headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "application/json"),
            ("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode()),
        )

    # ------------------------------------------------------------ requests

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        if not events:
            raise ValueError("nothing to encode")
        failed: dict[int, DestinationError] = {}
        requests: list[PartnerRequest] = []
        batched: list[tuple[int, bytes]] = []
        anonymous: list[tuple[int, bytes]] = []
        for position, event in enumerate(events):
            try:
                operation, is_anonymous = self.operation(event)
                body = orjson.dumps(operation)
            except EncodeError as exc:
                failed[position] = exc
                continue
            except orjson.JSONEncodeError as exc:
                failed[position] = EncodeError(f"event is not JSON-serializable: {exc}")
                continue
            if len(body) > MAX_OPERATION_BYTES:
                failed[position] = OperationTooLarge(
                    f"the Customer.io operation for this event is {len(body):,} bytes; "
                    f"Customer.io takes at most {MAX_OPERATION_BYTES:,} (drop or shorten "
                    "properties/traits with a destination filter)"
                )
                continue
            (anonymous if is_anonymous else batched).append((position, body))
        requests.extend(self._batches(events, batched))
        requests.extend(
            self._request(ANONYMOUS_EVENT_PATH, body, events, (position,))
            for position, body in anonymous
        )
        return Encoded(requests, failed)

    def _batches(
        self, events: Sequence[Event], operations: list[tuple[int, bytes]]
    ) -> list[PartnerRequest]:
        """Consecutive operations packed into ``/api/v2/batch`` bodies under 500 KB each."""
        requests: list[PartnerRequest] = []
        chunk: list[tuple[int, bytes]] = []
        size = len(_BATCH_OPEN) + len(_BATCH_CLOSE)
        for position, body in operations:
            grown = size + len(body) + (1 if chunk else 0)
            if chunk and grown > MAX_REQUEST_BYTES:
                requests.append(self._batch_request(events, chunk))
                chunk = []
                grown = len(_BATCH_OPEN) + len(_BATCH_CLOSE) + len(body)
            chunk.append((position, body))
            size = grown
        if chunk:
            requests.append(self._batch_request(events, chunk))
        return requests

    def _batch_request(
        self, events: Sequence[Event], chunk: list[tuple[int, bytes]]
    ) -> PartnerRequest:
        body = _BATCH_OPEN + b",".join(body for _, body in chunk) + _BATCH_CLOSE
        return self._request(BATCH_PATH, body, events, tuple(p for p, _ in chunk))

    def _request(
        self, path: str, body: bytes, events: Sequence[Event], covers: tuple[int, ...]
    ) -> PartnerRequest:
        return PartnerRequest(
            method="POST",
            url=self.base_url + path,
            headers=self.headers,
            body=body,
            message_ids=tuple(str(events[p].get("messageId") or "") for p in covers),
            covers=covers,
        )

    def delete_person(self, user_id: str) -> PartnerRequest:
        """A ``/api/v2/batch`` request deleting the person with this ``id`` (privacy deletion)."""
        operation = {"type": "person", "identifiers": {"id": user_id}, "action": "delete"}
        body = _BATCH_OPEN + orjson.dumps(operation) + _BATCH_CLOSE
        return PartnerRequest(
            method="POST", url=self.base_url + BATCH_PATH, headers=self.headers, body=body
        )

    def region_request(self) -> PartnerRequest:
        """``GET /api/v1/accounts/region``: answers only to valid Track API credentials."""
        return PartnerRequest(
            method="GET", url=self.base_url + REGION_PATH, headers=self.headers[1:], body=b""
        )

    # ------------------------------------------------------------ one event

    def operation(self, event: Event) -> tuple[dict[str, Any], bool]:
        """The Track API operation for one event, and whether it is an anonymous v1 event."""
        kind = event.get("type")
        if kind == "identify":
            return self._identify(event), False
        if kind == "group":
            return self._group(event), False
        if kind in ("track", "page", "screen"):
            return self._activity(event, kind)
        raise EncodeError(f"Customer.io takes no {kind!r} calls", reason="unsupported_type")

    def _identify(self, event: Event) -> dict[str, Any]:
        traits = object_copy(event.get("traits"))
        user_id = identifier(event.get("userId"))
        email = identifier(traits.get("email"))
        if user_id is not None:
            identifiers = {"id": user_id}
        elif email is not None:
            # Works when email is an identifier in the workspace (Customer.io's default).
            identifiers = {"email": email}
        else:
            raise MissingIdentity(
                "identify has neither userId nor traits.email: Customer.io cannot create a "
                "person for it (its anonymousId is kept on the person once identified)"
            )
        attributes = traits
        created_at = _parse(attributes.pop("createdAt", None))
        if created_at is not None and "created_at" not in attributes:
            attributes["created_at"] = int(created_at.timestamp())
        anonymous_id = identifier(event.get("anonymousId"))
        if anonymous_id is not None:
            # Customer.io attaches earlier anonymous events carrying this id to the person.
            attributes.setdefault("anonymous_id", anonymous_id)
        operation: dict[str, Any] = {
            "type": "person",
            "identifiers": identifiers,
            "action": "identify",
            "attributes": attributes,
        }
        timestamp = unix_seconds(event)
        if timestamp is not None:
            operation["timestamp"] = timestamp
        return operation

    def _activity(self, event: Event, kind: str) -> tuple[dict[str, Any], bool]:
        properties = object_copy(event.get("properties"))
        name = self._activity_name(event, kind, properties)
        user_id = identifier(event.get("userId"))
        timestamp = unix_seconds(event)
        action = "event" if kind == "track" else kind
        if user_id is None:
            anonymous_id = identifier(event.get("anonymousId"))
            if anonymous_id is None:
                raise MissingIdentity(f"{kind} has neither userId nor anonymousId")
            anonymous: dict[str, Any] = {
                "anonymous_id": anonymous_id,
                "name": name,
                "id": event_ulid(event),
                "type": action,
                "data": properties,
            }
            if timestamp is not None:
                anonymous["timestamp"] = timestamp
            return anonymous, True
        operation: dict[str, Any] = {
            "type": "person",
            "identifiers": {"id": user_id},
            "action": action,
            "name": name,
            "id": event_ulid(event),
            "attributes": properties,
        }
        if timestamp is not None:
            operation["timestamp"] = timestamp
        return operation, False

    @staticmethod
    def _activity_name(event: Event, kind: str, properties: dict[str, Any]) -> str:
        if kind == "track":
            name = identifier(event.get("event"))
        elif kind == "page":
            # Customer.io names page views by URL (its segments and triggers match on it).
            page = object_copy(object_copy(event.get("context")).get("page"))
            name = (
                identifier(properties.get("url"))
                or identifier(page.get("url"))
                or identifier(properties.get("path"))
                or identifier(page.get("path"))
                or identifier(event.get("name"))
            )
            if identifier(event.get("name")) is not None:
                properties.setdefault("name", event["name"])
        else:
            name = identifier(event.get("name")) or identifier(properties.get("name"))
        if name is None:
            what = {"track": "an event name", "page": "a URL, path or name"}.get(kind, "a name")
            raise EncodeError(f"{kind} has no {what} for Customer.io")
        return name

    def _group(self, event: Event) -> dict[str, Any]:
        group_id = identifier(event.get("groupId"))
        if group_id is None:
            raise EncodeError("group has no groupId")
        options = self.options_for(event)
        object_type = identifier(options.get("object_type_id")) or self.settings.object_type_id
        operation: dict[str, Any] = {
            "type": "object",
            "identifiers": {"object_type_id": object_type, "object_id": group_id},
            "action": "identify",
            "attributes": object_copy(event.get("traits")),
        }
        user_id = identifier(event.get("userId"))
        if user_id is not None:
            relationship: dict[str, Any] = {"identifiers": {"id": user_id}}
            attributes = options.get("relationship_attributes")
            if isinstance(attributes, dict) and attributes:
                relationship["relationship_attributes"] = attributes
            operation["cio_relationships"] = [relationship]
        return operation
