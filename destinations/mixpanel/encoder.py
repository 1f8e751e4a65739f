"""Segment events -> Mixpanel Ingestion API requests (pure: same events, same bytes).

| Segment | Mixpanel |
|---|---|
| track | ``/import`` event named as the track event |
| page / screen | ``/import`` event "Loaded a Page" / "Loaded a Screen" (or "Viewed <name> Page") |
| identify | ``/engage`` ``$set`` of the traits (email -> ``$email``, name -> ``$name`` ...) |
| group | ``/groups`` ``$set`` of the traits on (``group_key``, groupId) |
| alias | ``/import`` ``$merge`` (original ID merge) or an event with both ids (simplified) |

Every /import event carries ``time`` in ms, ``distinct_id`` and ``$insert_id`` (the
messageId, or a digest of it when it breaks Mixpanel's rule: at most 36 characters of
letters, digits and ``-``), so a retried request never counts an event twice. Requests
hold at most 2,000 items and 2 MB (Mixpanel's limits); a batch becomes as many requests
as needed, one endpoint each.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from destinations.base import DestinationError, Encoded, EncodeError, Event, UnsupportedType
from destinations.mixpanel.config import MixpanelSettings
from destinations.segment import (
    ItemizedRequest,
    anonymous_id,
    digest_id,
    event_time_ms,
    json_array,
    message_ids,
    pack,
    page_name,
    path_value,
    properties_of,
    text,
    user_id,
)

MAX_ITEMS = 2000
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024
_INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")

#: Segment's reserved traits -> Mixpanel's reserved profile properties.
PROFILE_TRAITS: Mapping[str, str] = {
    "email": "$email",
    "firstName": "$first_name",
    "first_name": "$first_name",
    "lastName": "$last_name",
    "last_name": "$last_name",
    "name": "$name",
    "phone": "$phone",
    "avatar": "$avatar",
    "createdAt": "$created",
    "created_at": "$created",
    "username": "$username",
}
#: Segment context -> Mixpanel default event properties.
CONTEXT_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("ip", "context.ip"),
    ("$current_url", "context.page.url"),
    ("$referrer", "context.page.referrer"),
    ("$os", "context.os.name"),
    ("$app_version_string", "context.app.version"),
    ("$app_build_number", "context.app.build"),
    ("$manufacturer", "context.device.manufacturer"),
    ("$model", "context.device.model"),
    ("$carrier", "context.network.carrier"),
    ("$screen_width", "context.screen.width"),
    ("$screen_height", "context.screen.height"),
    ("utm_source", "context.campaign.source"),
    ("utm_medium", "context.campaign.medium"),
    ("utm_campaign", "context.campaign.name"),
    ("utm_term", "context.campaign.term"),
    ("utm_content", "context.campaign.content"),
)
LIBRARY = "event-router"


def insert_id(event: Event) -> str:
    raw = text(event.get("messageId")) or ""
    return raw if _INSERT_ID.match(raw) else digest_id(raw)


class MixpanelEncoder:
    def __init__(
        self, settings: MixpanelSettings, options_for: Callable[[Event], Mapping[str, Any]]
    ) -> None:
        self.settings = settings
        self.options_for = options_for
        self.token = settings.project_token.get_secret_value()
        base = settings.base_url
        account = settings.service_account
        if account is not None:
            credentials = f"{account.username}:{account.secret.get_secret_value()}"
            self.import_url = f"{base}/import?strict=1&project_id={account.project_id}"
        else:
            secret = settings.api_secret.get_secret_value() if settings.api_secret else self.token
            credentials = f"{secret}:"
            self.import_url = f"{base}/import?strict=1"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode()
        json_headers = (("Content-Type", "application/json"), ("Accept", "application/json"))
        self.urls = {
            "import": self.import_url,
            "engage": f"{base}/engage?verbose=1",
            "groups": f"{base}/groups?verbose=1",
        }
        self.headers = {
            "import": (*json_headers, ("Authorization", auth)),
            "engage": json_headers,
            "groups": json_headers,
        }

    # ------------------------------------------------------------ batch -> requests

    def encode(self, events: Sequence[Event]) -> Encoded[ItemizedRequest]:
        if not events:
            raise ValueError("nothing to encode")
        failed: dict[int, DestinationError] = {}
        by_endpoint: dict[str, list[tuple[int, bytes]]] = {"import": [], "engage": [], "groups": []}
        for position, event in enumerate(events):
            try:
                endpoint, item = self.item(event)
                part = orjson.dumps(item)
            except DestinationError as exc:
                failed[position] = exc
                continue
            except orjson.JSONEncodeError as exc:
                failed[position] = EncodeError(f"event is not JSON-serializable: {exc}")
                continue
            if len(part) > MAX_EVENT_BYTES:
                failed[position] = EncodeError(
                    f"event is {len(part)} bytes as Mixpanel JSON; Mixpanel takes at most 1 MB"
                )
                continue
            by_endpoint[endpoint].append((position, part))
        requests: list[ItemizedRequest] = []
        for endpoint, entries in by_endpoint.items():
            parts = [part for _, part in entries]
            for group in pack(parts, max_items=MAX_ITEMS, max_bytes=MAX_BODY_BYTES):
                covers = tuple(entries[i][0] for i in group)
                requests.append(
                    ItemizedRequest(
                        method="POST",
                        url=self.urls[endpoint],
                        headers=self.headers[endpoint],
                        body=json_array([parts[i] for i in group]),
                        message_ids=message_ids(events, covers),
                        covers=covers,
                        owners=tuple(range(len(covers))),
                        endpoint=endpoint,
                    )
                )
        return Encoded(requests, failed)

    # ------------------------------------------------------------ one event -> one item

    def item(self, event: Event) -> tuple[str, dict[str, Any]]:
        kind = event.get("type")
        if kind in ("track", "page", "screen"):
            return "import", self.import_event(event, self.event_name(event))
        if kind == "identify":
            return "engage", self.profile_update(event)
        if kind == "group":
            return "groups", self.group_update(event)
        if kind == "alias":
            return "import", self.alias(event)
        raise UnsupportedType(f"Mixpanel takes no {kind!r} calls")

    def event_name(self, event: Event) -> str:
        kind = event["type"]
        if kind == "track":
            name = text(event.get("event"))
            if name is None:
                raise EncodeError("a track event needs an event name")
            return name
        noun = "Page" if kind == "page" else "Screen"
        name = page_name(event)
        if self.settings.page_events == "named" and name:
            return f"Viewed {name} {noun}"
        return f"Loaded a {noun}"

    def distinct_id(self, event: Event) -> str:
        override = text(self.options_for(event).get("distinct_id"))
        found = override or user_id(event) or anonymous_id(event)
        if found is None:
            raise EncodeError("the event has neither userId nor anonymousId")
        return found

    def import_event(self, event: Event, name: str) -> dict[str, Any]:
        time_ms = event_time_ms(event)
        if time_ms is None:
            raise EncodeError("the event has no readable timestamp or receivedAt")
        properties: dict[str, Any] = {"mp_lib": LIBRARY}
        for target, path in CONTEXT_PROPERTIES:
            value = path_value(event, path)
            if value is not None and value != "":
                properties[target] = value
        if event["type"] in ("page", "screen"):
            name_value = page_name(event)
            if name_value:
                properties["name"] = name_value
        properties.update(properties_of(event))
        extra = self.options_for(event).get("properties")
        if isinstance(extra, dict):
            properties.update(extra)
        if self.settings.id_merge == "simplified":
            anonymous, known = anonymous_id(event), user_id(event)
            if anonymous:
                properties["$device_id"] = anonymous
            if known:
                properties["$user_id"] = known
        properties["time"] = time_ms
        properties["distinct_id"] = self.distinct_id(event)
        properties["$insert_id"] = insert_id(event)
        return {"event": name, "properties": properties}

    def profile_update(self, event: Event) -> dict[str, Any]:
        values = {PROFILE_TRAITS.get(k, k): v for k, v in properties_of(event).items()}
        update: dict[str, Any] = {
            "$token": self.token,
            "$distinct_id": self.distinct_id(event),
            "$set": values,
        }
        ip = text(path_value(event, "context.ip"))
        update["$ip"] = ip if ip else "0"  # "0": do not geolocate from the router's address
        return update

    def group_update(self, event: Event) -> dict[str, Any]:
        group = text(event.get("groupId"))
        if group is None:
            raise EncodeError("a group call needs a groupId")
        return {
            "$token": self.token,
            "$group_key": self.settings.group_key,
            "$group_id": group,
            "$set": dict(properties_of(event)),
        }

    def alias(self, event: Event) -> dict[str, Any]:
        new, previous = user_id(event), text(event.get("previousId"))
        if new is None or previous is None:
            raise EncodeError("an alias needs userId and previousId")
        time_ms = event_time_ms(event)
        if time_ms is None:
            raise EncodeError("the event has no readable timestamp or receivedAt")
        if self.settings.id_merge == "original":
            properties: dict[str, Any] = {"$distinct_ids": [new, previous], "distinct_id": new}
            name = "$merge"
        else:
            # Simplified ID merge links a $device_id and a $user_id seen on one event.
            properties = {"$device_id": previous, "$user_id": new, "distinct_id": new}
            name = "$identify"
        properties["time"] = time_ms
        properties["$insert_id"] = insert_id(event)
        return {"event": name, "properties": properties}
