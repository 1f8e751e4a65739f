"""Segment track and page calls -> Measurement Protocol requests (pure: same events, same bytes).

A request speaks for one client (``client_id``, ``user_id``, ``user_properties`` are
request-level), so a batch is grouped by client, in order of first appearance, then cut at
25 events and 130 kB per request. Each event carries its own ``timestamp_micros``.

- track: e-commerce spec events become GA4's recommended events (see
  :mod:`destinations.ga4.ecommerce`), ``event_names`` renames others, the rest get a
  GA4-legal version of their name; properties become parameters (legal names, at most 25,
  string values cut to 100 characters, objects and arrays dropped).
- page: ``page_view`` with ``page_location``, ``page_title``, ``page_referrer``.
- ``client_id``: ``client_id_field`` in the event, else ``integrations[<name>].clientId``,
  else anonymousId, else userId; ``user_id``: userId. ``session_id`` and
  ``engagement_time_msec`` options (``integrations[<name>].sessionId``) become parameters.

GA4 drops events older than 72 hours without a word: those are dead-lettered here with
reason ``too_old`` instead (redrive them elsewhere or accept the gap), so the loss is seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from destinations.base import DestinationError, Encoded, EncodeError, Event, UnsupportedType
from destinations.ga4 import ecommerce
from destinations.ga4.config import GA4Settings
from destinations.ga4.names import (
    MAX_EVENTS,
    MAX_PARAMS,
    MAX_USER_PROPERTIES,
    MAX_USER_PROPERTY_NAME,
    MAX_USER_PROPERTY_VALUE,
    RESERVED_USER_PROPERTIES,
    event_name,
    legal_name,
    param_value,
)
from destinations.segment import (
    ItemizedRequest,
    anonymous_id,
    context_traits,
    event_datetime,
    json_array,
    message_ids,
    pack,
    path_value,
    properties_of,
    text,
    user_id,
)

MAX_BODY_BYTES = 130_000
#: Bytes kept for the request's envelope (client_id, user_id, user_properties).
ENVELOPE_ROOM = 4096
#: GA4 accepts event timestamps up to 72 hours back.
MAX_AGE_SECONDS = 72 * 3600
#: Standard page fields (properties, then context.page) -> page_view parameters.
PAGE_FIELDS = (
    ("page_location", "url"),
    ("page_title", "title"),
    ("page_referrer", "referrer"),
)
_PAGE_SOURCES = frozenset(source for _, source in PAGE_FIELDS) | {"path", "search", "name"}


class GA4Encoder:
    def __init__(
        self,
        settings: GA4Settings,
        options_for: Callable[[Event], Mapping[str, Any]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.options_for = options_for
        self.clock = clock
        base = settings.base_url
        query = f"measurement_id={settings.measurement_id}&api_secret="
        query += settings.api_secret.get_secret_value()
        self.url = f"{base}/mp/collect?{query}"
        self.debug_url = f"{base}/debug/mp/collect?{query}"
        self.headers = (("Content-Type", "application/json"),)

    def encode(self, events: Sequence[Event]) -> Encoded[ItemizedRequest]:
        if not events:
            raise ValueError("nothing to encode")
        failed: dict[int, DestinationError] = {}
        clients: dict[tuple[str, str | None], list[tuple[int, bytes, dict[str, Any]]]] = {}
        for position, event in enumerate(events):
            try:
                client = self.client_id(event)
                ga_event = self.ga_event(event)
                part = orjson.dumps(ga_event)
            except DestinationError as exc:
                failed[position] = exc
                continue
            except orjson.JSONEncodeError as exc:
                failed[position] = EncodeError(f"event is not JSON-serializable: {exc}")
                continue
            if len(part) > MAX_BODY_BYTES - ENVELOPE_ROOM:
                failed[position] = EncodeError(
                    f"event is {len(part)} bytes as GA4 JSON; a request takes at most 130 kB"
                )
                continue
            key = (client, user_id(event))
            clients.setdefault(key, []).append((position, part, self.user_properties(event)))
        requests: list[ItemizedRequest] = []
        for (client, user), entries in clients.items():
            head: dict[str, Any] = {"client_id": client}
            if user is not None:
                head["user_id"] = user
            parts = [part for _, part, _ in entries]
            for group in pack(
                parts, max_items=MAX_EVENTS, max_bytes=MAX_BODY_BYTES - ENVELOPE_ROOM
            ):
                envelope = dict(head)
                merged: dict[str, Any] = {}
                for i in group:
                    merged.update(entries[i][2])
                if merged:
                    envelope["user_properties"] = merged
                covers = tuple(entries[i][0] for i in group)
                body = orjson.dumps(envelope)[:-1] + b',"events":'
                body += json_array([parts[i] for i in group]) + b"}"
                requests.append(
                    ItemizedRequest(
                        method="POST",
                        url=self.url,
                        headers=self.headers,
                        body=body,
                        message_ids=message_ids(events, covers),
                        covers=covers,
                        owners=tuple(range(len(covers))),
                        endpoint="collect",
                    )
                )
        return Encoded(requests, failed)

    # ------------------------------------------------------------ one event

    def client_id(self, event: Event) -> str:
        field = self.settings.client_id_field
        found = text(path_value(event, field)) if field else None
        options = self.options_for(event)
        found = found or text(options.get("clientId")) or text(options.get("client_id"))
        found = found or anonymous_id(event) or user_id(event)
        if found is None:
            raise EncodeError("no GA4 client id: the event has neither anonymousId nor userId")
        return found

    def ga_event(self, event: Event) -> dict[str, Any]:
        kind = event.get("type")
        properties = properties_of(event)
        params: dict[str, Any] = {}
        options = self.options_for(event)
        session = param_value(options.get("sessionId", options.get("session_id")))
        if session is not None:
            params["session_id"] = session
        engagement = param_value(options.get("engagementTimeMsec"))
        params["engagement_time_msec"] = (
            engagement if engagement is not None else self.settings.engagement_time_msec
        )
        consumed: frozenset[str]
        if kind == "page":
            name = "page_view"
            for target, source in PAGE_FIELDS:
                value = param_value(properties.get(source))
                if value is None:
                    value = param_value(path_value(event, f"context.page.{source}"))
                if value is not None:
                    params[target] = value
            consumed = _PAGE_SOURCES
            items: list[dict[str, Any]] = []
        elif kind == "track":
            raw = text(event.get("event"))
            if raw is None:
                raise EncodeError("a track event needs an event name")
            mapped = self.settings.event_names.get(raw) or ecommerce.EVENTS.get(raw)
            name = mapped or event_name(raw)
            if name in ecommerce.EVENTS.values():
                params.update(ecommerce.params_for(name, properties))
                items = ecommerce.items_of(name, properties)
                consumed = ecommerce.CONSUMED
            else:
                items, consumed = [], frozenset()
        else:
            raise UnsupportedType(f"GA4 takes no {kind!r} calls")
        room = MAX_PARAMS - (1 if items else 0)
        for key, raw_value in properties.items():
            if len(params) >= room:
                break
            if key in consumed:
                continue
            value = param_value(raw_value)
            if value is not None:
                params.setdefault(legal_name(key), value)
        if items:
            params["items"] = items
        out: dict[str, Any] = {"name": name, "params": params}
        stamp = self.timestamp_micros(event)
        if stamp is not None:
            out["timestamp_micros"] = stamp
        return out

    def timestamp_micros(self, event: Event) -> int | None:
        moment = event_datetime(event)
        if moment is None:
            return None
        seconds = moment.timestamp()
        now = self.clock()
        if seconds > now:
            return None  # a clock ahead of ours: GA4 takes only past times; it uses arrival
        if now - seconds > MAX_AGE_SECONDS:
            raise EncodeError(
                "GA4 drops events older than 72 hours; this one was not sent", reason="too_old"
            )
        return int(seconds * 1_000_000)

    def user_properties(self, event: Event) -> dict[str, Any]:
        wanted = self.settings.user_properties
        if not wanted:
            return {}
        traits = context_traits(event)
        out: dict[str, Any] = {}
        for trait in wanted[:MAX_USER_PROPERTIES]:
            value = param_value(traits.get(trait), limit=MAX_USER_PROPERTY_VALUE)
            if value is not None:
                name = legal_name(
                    trait, limit=MAX_USER_PROPERTY_NAME, reserved=RESERVED_USER_PROPERTIES
                )
                out[name] = {"value": value}
        return out
