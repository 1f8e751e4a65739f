"""Segment events -> Amplitude HTTP V2 requests (pure: same events, same bytes).

- track: ``event_type`` = the event name, ``event_properties`` = properties, revenue fields;
- page / screen: "Viewed <name> Page" / "Viewed <name> Screen" ("Loaded a Page" unnamed);
- identify: ``$identify`` with ``user_properties: {"$set": traits}``;
- group: ``$identify`` with ``groups: {group_type: groupId}``, then ``$groupidentify``
  with the same ``groups`` and ``group_properties: {"$set": traits}``.

Every event carries ``insert_id`` (the messageId; Amplitude drops a repeat within 7 days, so
a retried request never counts twice), ``time`` in ms, ``user_id`` (userId) and
``device_id`` (``integrations.Amplitude.device_id``, else anonymousId). Revenue: ``price``
and ``quantity`` (default 1) from the properties of that name, ``revenue`` from
``revenue``, with ``productId``/``revenueType`` when given. A request holds at most 2,000
events and 1 MB (Amplitude answers 413 beyond); a batch becomes as many requests as needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from destinations.amplitude.config import AmplitudeSettings
from destinations.base import DestinationError, Encoded, EncodeError, Event, UnsupportedType
from destinations.segment import (
    ItemizedRequest,
    anonymous_id,
    event_time_ms,
    json_array,
    message_ids,
    number,
    pack,
    page_name,
    path_value,
    properties_of,
    text,
    user_id,
)

MAX_EVENTS = 2000
MAX_BODY_BYTES = 1_000_000
LIBRARY = "event-router"
#: Segment context -> Amplitude event fields.
CONTEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("app_version", "context.app.version"),
    ("os_name", "context.os.name"),
    ("os_version", "context.os.version"),
    ("device_brand", "context.device.brand"),
    ("device_manufacturer", "context.device.manufacturer"),
    ("device_model", "context.device.model"),
    ("carrier", "context.network.carrier"),
    ("country", "context.location.country"),
    ("region", "context.location.region"),
    ("city", "context.location.city"),
    ("language", "context.locale"),
    ("ip", "context.ip"),
)


class AmplitudeEncoder:
    def __init__(
        self, settings: AmplitudeSettings, options_for: Callable[[Event], Mapping[str, Any]]
    ) -> None:
        self.settings = settings
        self.options_for = options_for
        self.url = settings.url
        self.head = b'{"api_key":' + orjson.dumps(settings.api_key.get_secret_value())
        options = (
            {"min_id_length": settings.min_id_length} if settings.min_id_length is not None else {}
        )
        self.tail = (b',"options":' + orjson.dumps(options) if options else b"") + b"}"
        self.headers = (("Content-Type", "application/json"), ("Accept", "*/*"))

    def encode(self, events: Sequence[Event]) -> Encoded[ItemizedRequest]:
        if not events:
            raise ValueError("nothing to encode")
        failed: dict[int, DestinationError] = {}
        entries: list[tuple[int, list[bytes]]] = []
        for position, event in enumerate(events):
            try:
                parts = [orjson.dumps(item) for item in self.items(event)]
            except DestinationError as exc:
                failed[position] = exc
                continue
            except orjson.JSONEncodeError as exc:
                failed[position] = EncodeError(f"event is not JSON-serializable: {exc}")
                continue
            size = sum(len(p) for p in parts) + len(parts)
            if size + len(self.head) + len(self.tail) + 12 > MAX_BODY_BYTES:
                failed[position] = EncodeError(
                    f"event is {size} bytes as Amplitude JSON; a request takes at most 1 MB"
                )
                continue
            entries.append((position, parts))
        # Pack whole Segment events (an event's items stay in one request).
        joined = [b",".join(parts) for _, parts in entries]
        overhead = len(self.head) + len(self.tail) + len(b',"events":[]')
        requests: list[ItemizedRequest] = []
        packed = pack(joined, max_items=MAX_EVENTS, max_bytes=MAX_BODY_BYTES, overhead=overhead)
        for group in packed:
            for chunk in self._within_item_limit(group, entries):
                covers = tuple(entries[i][0] for i in chunk)
                owners = tuple(
                    slot for slot, i in enumerate(chunk) for _ in range(len(entries[i][1]))
                )
                body = (
                    self.head
                    + b',"events":'
                    + json_array([part for i in chunk for part in entries[i][1]])
                    + self.tail
                )
                requests.append(
                    ItemizedRequest(
                        method="POST",
                        url=self.url,
                        headers=self.headers,
                        body=body,
                        message_ids=message_ids(events, covers),
                        covers=covers,
                        owners=owners,
                        endpoint="httpapi",
                    )
                )
        return Encoded(requests, failed)

    @staticmethod
    def _within_item_limit(
        group: list[int], entries: list[tuple[int, list[bytes]]]
    ) -> list[list[int]]:
        """Split a group whose Amplitude events (two per group call) exceed 2,000."""
        chunks: list[list[int]] = [[]]
        count = 0
        for i in group:
            items = len(entries[i][1])
            if chunks[-1] and count + items > MAX_EVENTS:
                chunks.append([])
                count = 0
            chunks[-1].append(i)
            count += items
        return chunks

    # ------------------------------------------------------------ one event -> items

    def items(self, event: Event) -> list[dict[str, Any]]:
        kind = event.get("type")
        base = self.common(event)
        if kind == "track":
            name = text(event.get("event"))
            if name is None:
                raise EncodeError("a track event needs an event name")
            return [{**base, "event_type": name, **self.payload(event)}]
        if kind in ("page", "screen"):
            noun = "Page" if kind == "page" else "Screen"
            name = page_name(event)
            event_type = f"Viewed {name} {noun}" if name else f"Loaded a {noun}"
            return [{**base, "event_type": event_type, **self.payload(event)}]
        if kind == "identify":
            return [{**base, "event_type": "$identify", "user_properties": self.set_of(event)}]
        if kind == "group":
            group = text(event.get("groupId"))
            if group is None:
                raise EncodeError("a group call needs a groupId")
            groups = {self.settings.group_type: group}
            return [
                {**base, "event_type": "$identify", "groups": groups},
                {
                    **base,
                    "insert_id": f"{base['insert_id']}-group",
                    "event_type": "$groupidentify",
                    "groups": groups,
                    "group_properties": self.set_of(event),
                },
            ]
        raise UnsupportedType(f"Amplitude takes no {kind!r} calls")

    def common(self, event: Event) -> dict[str, Any]:
        options = self.options_for(event)
        known = user_id(event)
        device = text(options.get("device_id")) or anonymous_id(event)
        if known is None and device is None:
            raise EncodeError("the event has neither userId nor anonymousId")
        time_ms = event_time_ms(event)
        if time_ms is None:
            raise EncodeError("the event has no readable timestamp or receivedAt")
        fields: dict[str, Any] = {}
        if known is not None:
            fields["user_id"] = known
        if device is not None:
            fields["device_id"] = device
        fields["time"] = time_ms
        fields["insert_id"] = text(event.get("messageId")) or ""
        session = number(options.get("session_id"))
        fields["session_id"] = int(session) if session is not None else -1
        for target, path in CONTEXT_FIELDS:
            value = text(path_value(event, path))
            if value is not None:
                fields[target] = value
        for target, path in (
            ("location_lat", "context.location.latitude"),
            ("location_lng", "context.location.longitude"),
        ):
            coordinate = number(path_value(event, path))
            if coordinate is not None:
                fields[target] = coordinate
        platform = text(path_value(event, "context.device.type"))
        if platform is None and path_value(event, "context.userAgent") is not None:
            platform = "Web"
        if platform is not None:
            fields["platform"] = platform
        fields["library"] = LIBRARY
        return fields

    @staticmethod
    def set_of(event: Event) -> dict[str, Any]:
        return {"$set": dict(properties_of(event))}

    @staticmethod
    def payload(event: Event) -> dict[str, Any]:
        """``event_properties`` and the revenue fields of a track, page or screen."""
        properties = properties_of(event)
        out: dict[str, Any] = {"event_properties": dict(properties)}
        price = number(properties.get("price"))
        revenue = number(properties.get("revenue"))
        if price is not None:
            quantity = number(properties.get("quantity"))
            out["price"] = price
            out["quantity"] = int(quantity) if quantity is not None else 1
        if revenue is not None:
            out["revenue"] = revenue
        if price is not None or revenue is not None:
            product = text(properties.get("productId")) or text(properties.get("product_id"))
            if product is not None:
                out["productId"] = product
            kind = text(properties.get("revenueType")) or text(properties.get("revenue_type"))
            if kind is not None:
                out["revenueType"] = kind
        return out
