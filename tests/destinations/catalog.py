"""Driving a catalog plugin through one attempt, the way the delivery lane does.

``attempt`` encodes a batch, sends every request through a real HTTP client to a fake
partner and checks each answer; it returns every event's verdict: ``"delivered"`` or the
:class:`DestinationError` that failed it. (The lane itself runs in the end-to-end test.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from destinations.base import AnyPlugin, DestinationError, Encoded, Event, PluginContext
from destinations.http import HttpClient
from destinations.registry import get_plugin
from router.config import Destination
from router.spec import format_timestamp

Verdict = str | DestinationError


def make_plugin(
    type_name: str,
    settings: dict[str, Any],
    *,
    http: HttpClient | None = None,
    batch_size: int | None = None,
    name: str = "Partner",
) -> AnyPlugin:
    data: dict[str, Any] = {
        "id": "partner",
        "name": name,
        "type": type_name,
        "sources": ["web"],
        "settings": settings,
        "delivery": {"timeout": "5s"},
    }
    if batch_size is not None:
        data["delivery"]["batch_size"] = batch_size
    destination = Destination.model_validate(data)
    return get_plugin(type_name)(destination, PluginContext(http=http or HttpClient()))


def encoded(plugin: AnyPlugin, events: Sequence[Event]) -> Encoded[Any]:
    result = plugin.encode(events)
    return result if isinstance(result, Encoded) else Encoded([result])


async def attempt(plugin: AnyPlugin, events: Sequence[Event]) -> list[Verdict]:
    verdicts: list[Verdict | None] = [None] * len(events)
    batch = encoded(plugin, events)
    for position, error in batch.failed.items():
        verdicts[position] = error
    for request in batch.requests:
        covers = request.covers or tuple(i for i in range(len(events)) if i not in batch.failed)
        try:
            response = await plugin.send(request)
            refused = plugin.check(request, response)
        except DestinationError as exc:
            for position in covers:
                verdicts[position] = exc
            continue
        for slot, position in enumerate(covers):
            verdicts[position] = refused.get(slot, "delivered")
    assert all(v is not None for v in verdicts), "an event got no verdict"
    return [v for v in verdicts if v is not None]


def recent(minutes: float = 1.0) -> str:
    return format_timestamp(datetime.now(UTC) - timedelta(minutes=minutes))


def track(index: int, name: str = "Clicked", **fields: Any) -> Event:
    stamp = recent()
    event: Event = {
        "type": "track",
        "event": name,
        "messageId": f"msg-{index:04d}",
        "userId": f"user-{index % 3:03d}",
        "anonymousId": f"anon-{index % 3:03d}",
        "timestamp": stamp,
        "receivedAt": stamp,
        "properties": {"index": index},
        "context": {"ip": "203.0.113.7", "library": {"name": "analytics-python"}},
    }
    event.update(fields)
    return event


def shown(plugin: AnyPlugin, request: Any, response: Any = None) -> str:
    """Everything a person could read about a request and its answer, as one string."""
    parts = [plugin.describe_request(request)]
    if response is not None:
        parts.append(plugin.describe_response(response))
    return json.dumps(parts)
