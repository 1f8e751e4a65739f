"""The event the pipeline's unit tests start from: one factory for every stage's tests."""

from __future__ import annotations

import copy
from typing import Any

BASE_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "messageId": "m1",
    "properties": {
        "total": 30,
        "currency": "EUR",
        "email": "x@example.com",
        "products": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20}],
    },
    "context": {"ip": "1.2.3.4", "library": {"name": "analytics.js"}},
    "traits": {"plan": "pro"},
}


#: As an override value: leave the field out of the event.
ABSENT: Any = object()


def make_event(**overrides: Any) -> dict[str, Any]:
    """A decoded track event (a fresh deep copy); ``overrides`` replace top-level fields
    (deep-copied too), ``ABSENT`` removes one."""
    event = copy.deepcopy(BASE_EVENT)
    for key, value in overrides.items():
        if value is ABSENT:
            event.pop(key, None)
        else:
            event[key] = copy.deepcopy(value)
    return event
