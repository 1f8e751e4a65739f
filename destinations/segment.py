"""Reading Segment-spec events the way catalog encoders need them.

Events reach a destination as the processor wrote them (dicts, already validated and stamped:
``messageId``, ``receivedAt`` and ``timestamp`` are present). Partners want the same few
things out of them: when it happened, in their clock unit; who did it; a value deep inside
``context``. These helpers read without changing the event (encoders must leave it untouched)
and never raise on odd values: a field of the wrong type reads as absent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from destinations.base import PartnerRequest


@dataclass(frozen=True, slots=True)
class ItemizedRequest(PartnerRequest):
    """A request whose body lists partner items, not one item per event.

    ``owners[i]`` is the position (in ``covers``) of the event that produced the partner's
    item ``i``; a partner that reports errors by item index (Amplitude, Mixpanel) is mapped
    back to events through it. One event may produce several items (Amplitude's group call
    is an ``$identify`` plus a ``$groupidentify``).
    """

    owners: tuple[int, ...] = ()
    #: What the endpoint is for (``import``, ``engage``, ``groups`` ...), for the check.
    endpoint: str = ""


def path_value(node: Any, path: str) -> Any:
    """``context.page.url`` read from nested dicts; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def text(value: Any) -> str | None:
    """A non-empty string, or a number as a string (Segment coerces ids); else None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return None


def identifier(value: Any) -> str | None:
    """An id or attribute as partners key it: a string or number as text, surrounding
    whitespace removed; None when nothing is left (or for booleans, None, containers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        stripped = str(value).strip()
        return stripped or None
    return None


def object_copy(value: Any) -> dict[str, Any]:
    """A shallow copy of ``value`` when it is a JSON object, else an empty one."""
    return dict(value) if isinstance(value, dict) else {}


def number(value: Any) -> float | None:
    """A finite number, or a numeric string (``"12.50"``); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def properties_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """``properties`` for track/page/screen, ``traits`` for identify/group; {} when absent."""
    field = "traits" if event.get("type") in ("identify", "group") else "properties"
    value = event.get(field)
    return value if isinstance(value, dict) else {}


def context_traits(event: Mapping[str, Any]) -> dict[str, Any]:
    value = path_value(event, "context.traits")
    return value if isinstance(value, dict) else {}


def event_datetime(event: Mapping[str, Any]) -> datetime | None:
    """When the event happened: ``timestamp`` (skew-corrected), else ``receivedAt``."""
    for field in ("timestamp", "originalTimestamp", "receivedAt"):
        raw = event.get(field)
        if isinstance(raw, str):
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def event_time_ms(event: Mapping[str, Any]) -> int | None:
    moment = event_datetime(event)
    return None if moment is None else int(moment.timestamp() * 1000)


def user_id(event: Mapping[str, Any]) -> str | None:
    return text(event.get("userId"))


def anonymous_id(event: Mapping[str, Any]) -> str | None:
    return text(event.get("anonymousId"))


def message_id(event: Mapping[str, Any]) -> str:
    return text(event.get("messageId")) or ""


def digest_id(value: str, length: int = 32) -> str:
    """A stable hex id of at most ``length`` characters, for partners with short id limits."""
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def page_name(event: Mapping[str, Any]) -> str | None:
    """A page or screen's name, with its category in front when both are set (Segment's rule)."""
    name = text(event.get("name"))
    category = text(event.get("category")) or text(properties_of(event).get("category"))
    if name and category:
        return f"{category} {name}"
    return name


def message_ids(events: Sequence[Mapping[str, Any]], positions: Sequence[int]) -> tuple[str, ...]:
    return tuple(message_id(events[i]) for i in positions)


def pack(
    parts: Sequence[bytes], *, max_items: int, max_bytes: int, overhead: int = 2
) -> list[list[int]]:
    """Positions of serialized items grouped, in order, into bodies within both limits.

    A body is ``overhead`` bytes of framing plus the items and one separator byte between
    each two. Callers refuse items that cannot fit a body on their own before packing.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    size = overhead
    for position, part in enumerate(parts):
        extra = len(part) + (1 if current else 0)
        if current and (len(current) >= max_items or size + extra > max_bytes):
            groups.append(current)
            current, size, extra = [], overhead, len(part)
        current.append(position)
        size += extra
    if current:
        groups.append(current)
    return groups


def json_array(parts: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"
