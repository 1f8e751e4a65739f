"""The benchmark workload: a realistic event mix and the workspace every figure routes it with.

Five webhook destinations, each with one filter and one transformation; a source with two
middleware and (with ``plan=True``) a tracking plan that validates every event type and only
annotates violations, so it costs what a plan costs without changing what is routed.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from router.config import KafkaSettings, Workspace
from router.workspace import validate_workspace

DESTINATIONS = ["mixpanel", "amplitude", "ga4", "customerio", "webhook"]
WRITE_KEY = "bench-key"

FILTERS: list[dict[str, Any]] = [
    {"type": "drop", "if": 'event = "Cart Viewed"'},
    {"type": "drop_properties", "fields": ["context.ip"]},
    {"type": "only", "if": 'type != "page"'},
    {"type": "allow_properties", "fields": ["properties.total", "properties.currency"]},
    {"type": "drop", "if": 'contains(userId, "user-1999")'},
]
TRANSFORMATIONS: list[dict[str, Any]] = [
    {"type": "rename_event", "if": 'event = "Signed Up"', "to": "Sign Up"},
    {"type": "set_values", "values": {"properties.source": "router"}},
    {"type": "rename_properties", "fields": {"properties.total": "properties.value"}},
    {"type": "set_values", "if": 'type = "identify"', "values": {"traits.tier": "x"}},
    {"type": "rename_properties", "fields": {"properties.sku": "properties.product_id"}},
]

_ORDER = {
    "type": "object",
    "required": ["total", "currency"],
    "properties": {
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "sku": {"type": "string"},
    },
}
TRACKING_PLAN: dict[str, Any] = {
    "id": "web-plan",
    "rules": {
        "common": {"type": "object", "required": ["type"]},
        "track": {
            name: {"type": "object", "properties": {"properties": _ORDER}}
            for name in ("Order Completed", "Product Viewed", "Cart Viewed", "Signed Up")
        },
        "identify": {
            "type": "object",
            "properties": {
                "traits": {
                    "type": "object",
                    "properties": {"email": {"type": "string"}, "plan": {"type": "string"}},
                }
            },
        },
        # Pages need a rule of their own to be planned (else each is an "Unplanned Event").
        "page": {
            "Page Viewed": {
                "type": "object",
                "properties": {
                    "properties": {
                        "type": "object",
                        "properties": {"title": {"type": "string"}, "referrer": {"type": "string"}},
                    }
                },
            }
        },
    },
}


def realistic_event(i: int, rng: random.Random) -> dict[str, Any]:
    """~420-byte events: mostly track, some identify and page, as a web source sends."""
    user = f"user-{rng.randrange(20_000)}"
    kind = rng.choices(["track", "identify", "page"], weights=[7, 2, 1])[0]
    event: dict[str, Any] = {
        "type": kind,
        "userId": user,
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128))),
        "messageId": f"bench-{i}",
        "timestamp": "2026-11-23T10:00:00.000Z",
        "sentAt": "2026-11-23T10:00:01.000Z",
        "receivedAt": "2026-11-23T10:00:01.100Z",
        "context": {
            "ip": "203.0.113.9",
            "library": {"name": "analytics.js", "version": "1.84.3"},
            "page": {"path": "/checkout", "url": "https://shop.example/checkout"},
        },
    }
    if kind == "track":
        event["event"] = rng.choice(
            ["Order Completed", "Product Viewed", "Cart Viewed", "Signed Up"]
        )
        event["properties"] = {
            "total": rng.randrange(1, 500),
            "currency": "EUR",
            "sku": f"sku-{i % 97}",
        }
    elif kind == "identify":
        event["traits"] = {"email": f"{user}@example.com", "plan": rng.choice(["free", "pro"])}
    else:
        event["name"] = "Checkout"
        event["properties"] = {"title": "Checkout", "referrer": "https://search.example/"}
    return event


def bench_workspace_data(
    kafka: KafkaSettings,
    state_dir: str,
    *,
    urls: dict[str, str] | None = None,
    delivery: dict[str, Any] | None = None,
    plan: bool = False,
    poll_timeout: str = "50ms",
) -> dict[str, Any]:
    """The workspace as YAML-ready data; ``urls`` maps destination id -> webhook URL."""
    destinations = []
    for i, name in enumerate(DESTINATIONS):
        dest: dict[str, Any] = {
            "id": name,
            "name": name.title(),
            "type": "webhook",
            "settings": {"url": (urls or {}).get(name, f"http://127.0.0.1:9/{name}")},
            "sources": ["web"],
            "filters": [FILTERS[i]],
            "transformations": [TRANSFORMATIONS[i]],
        }
        if delivery:
            dest["delivery"] = dict(delivery)
        destinations.append(dest)
    source: dict[str, Any] = {
        "id": "web",
        "write_keys": [WRITE_KEY],
        "middleware": [
            {"type": "drop_fields", "fields": ["context.library"]},
            {"type": "hash_fields", "fields": ["traits.email"], "salt": "s"},
        ],
    }
    data: dict[str, Any] = {
        "kafka": kafka.model_dump(exclude_none=True),
        "processor": {"state_dir": state_dir, "poll_timeout": poll_timeout},
        "sources": [source],
        "destinations": destinations,
    }
    if plan:
        source["tracking_plan"] = {"plan": TRACKING_PLAN["id"]}
        data["tracking_plans"] = [TRACKING_PLAN]
    return data


def bench_workspace(kafka: KafkaSettings, state_dir: str, *, plan: bool = False) -> Workspace:
    return validate_workspace(bench_workspace_data(kafka, state_dir, plan=plan))
