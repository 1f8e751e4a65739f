"""Gateway -> processor -> one delivery agent -> Mixpanel, Amplitude, GA4 and Slack fakes at once.

Each fake must receive exactly its own events, in its own format, once; Amplitude throttles
one user (429) on its first request, and only Amplitude's lane retries because of it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from router.config import KafkaSettings, Workspace
from router.delivery.agent import DeliveryAgent
from router.gateway import Gateway
from router.processor import Processor
from router.workspace import validate_workspace
from tests.fakes.amplitude import FakeAmplitude
from tests.fakes.ga4 import FakeGA4
from tests.fakes.mixpanel import FakeMixpanel
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.integration

KEY = "wk-catalog-e2e"
FAST = {"backoff_min": "200ms", "backoff_max": "500ms", "timeout": "3s", "batch_size": 25}
USERS = ["user-1", "user-2", "user-3"]


def workspace(
    kafka: KafkaSettings,
    state: Path,
    mixpanel: FakeMixpanel,
    amplitude: FakeAmplitude,
    ga4: FakeGA4,
    slack: FakeSlack,
) -> Workspace:
    def destination(
        dest_id: str, name: str, kind: str, settings: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": dest_id,
            "name": name,
            "type": kind,
            "sources": ["shop"],
            "settings": settings,
            "delivery": FAST,
            **extra,
        }

    return validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
            "sources": [{"id": "shop", "write_keys": [KEY]}],
            "destinations": [
                destination(
                    "mp",
                    "Mixpanel",
                    "mixpanel",
                    {"project_token": mixpanel.token, "api_host": mixpanel.base_url},
                ),
                destination(
                    "amp",
                    "Amplitude",
                    "amplitude",
                    {
                        "api_key": amplitude.api_key,
                        "api_host": amplitude.base_url,
                    },
                ),
                destination(
                    "ga",
                    "Google Analytics 4",
                    "ga4",
                    {
                        "measurement_id": ga4.measurement_id,
                        "api_secret": ga4.api_secret,
                        "api_host": ga4.base_url,
                    },
                ),
                destination(
                    "slack",
                    "Slack",
                    "slack",
                    {
                        "webhook_url": slack.url,
                        "templates": {"Order Completed": "{{userId}} ordered {{properties.total}}"},
                    },
                    filters=[{"type": "only", "if": 'event = "Order Completed"'}],
                ),
            ],
        }
    )


def segment_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i, user in enumerate(USERS):
        anonymous = f"anon-{i + 1}"
        events += [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": user,
                "anonymousId": anonymous,
                "messageId": f"order-{i}",
                "properties": {"total": 10 * (i + 1), "order_id": f"o-{i}"},
            },
            {
                "type": "track",
                "event": "Product Viewed",
                "userId": user,
                "anonymousId": anonymous,
                "messageId": f"view-{i}",
                "properties": {"product_id": f"p-{i}", "price": 5},
            },
            {
                "type": "page",
                "name": "Home",
                "userId": user,
                "anonymousId": anonymous,
                "messageId": f"page-{i}",
                "properties": {"url": "https://shop.test/"},
            },
        ]
    events += [
        {
            "type": "identify",
            "userId": "user-1",
            "messageId": "identify-1",
            "traits": {"plan": "pro"},
        },
        {
            "type": "group",
            "userId": "user-1",
            "groupId": "acme",
            "messageId": "group-1",
            "traits": {"seats": 3},
        },
        {"type": "alias", "userId": "user-1", "previousId": "anon-1", "messageId": "alias-1"},
    ]
    return events


def mixpanel_ids(fake: FakeMixpanel) -> set[str]:
    return (
        set(fake.imported)
        | {"identify-1" for _ in fake.profiles}
        | {"group-1" for _ in fake.groups}
    )


async def wait_for(condition: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def test_four_catalog_destinations_from_the_gateway(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    async with (
        FakeMixpanel(token="mp-token-e2e-0001") as mixpanel,
        FakeAmplitude(api_key="amp-key-e2e-0001", throttle_users={"user-2": 1}) as amplitude,
        FakeGA4(api_secret="ga4-secret-e2e-01") as ga4,
        FakeSlack() as slack,
    ):
        config = workspace(kafka, tmp_path, mixpanel, amplitude, ga4, slack)
        async with (
            Gateway(config, registry, port=0) as gateway,
            Processor(config, registry, group_id=f"{kafka.topic_prefix}processor"),
            DeliveryAgent(
                config,
                ["mp", "amp", "ga", "slack"],
                registry,
                consumer_options={
                    "session_timeout_ms": 3000,
                    "heartbeat_interval_ms": 500,
                    "rebalance_timeout_ms": 3000,
                },
            ),
            aiohttp.ClientSession() as http,
        ):
            body = {"batch": segment_events(), "writeKey": KEY}
            async with http.post(f"http://127.0.0.1:{gateway.port}/v1/batch", json=body) as answer:
                assert answer.status == 200, await answer.text()

            ids = {e["messageId"] for e in segment_events()}
            tracks_and_pages = {i for i in ids if i.split("-")[0] in ("order", "view", "page")}
            await wait_for(
                lambda: (
                    mixpanel_ids(mixpanel) == ids
                    and len(ga4.collected) == len(tracks_and_pages)
                    and len(slack.messages) == 3
                ),
                timeout=60,
                what="Mixpanel, GA4 and Slack got their events",
            )
            amplitude_ids = tracks_and_pages | {"identify-1", "group-1", "group-1-group"}
            await wait_for(
                lambda: set(amplitude.ingested) == amplitude_ids,
                timeout=60,
                what="Amplitude got every event after the throttling",
            )
            await asyncio.sleep(0.5)  # anything sent twice would arrive by now

    # Mixpanel: every call type, each where Mixpanel wants it.
    assert {e["event"] for e in mixpanel.imported.values()} == {
        "Order Completed",
        "Product Viewed",
        "Loaded a Page",
        "$identify",
    }
    assert [p["$set"] for p in mixpanel.profiles] == [{"plan": "pro"}]
    assert [(g["$group_key"], g["$group_id"]) for g in mixpanel.groups] == [("company", "acme")]
    assert sum(len(orjson.loads(c.body)) for c in mixpanel.calls if c.path == "/import") == 10

    # GA4: tracks and pages only (identify, group and alias never reach its topic), legal names.
    names = sorted(event["name"] for _, event in ga4.collected)
    assert names == ["page_view"] * 3 + ["purchase"] * 3 + ["view_item"] * 3
    assert not ga4.dropped
    assert {body["client_id"] for body, _ in ga4.collected} == {"anon-1", "anon-2", "anon-3"}

    # Slack: only the chosen event, one message each.
    assert sorted(m["text"] for m in slack.messages) == [
        "user-1 ordered 10",
        "user-2 ordered 20",
        "user-3 ordered 30",
    ]

    # Amplitude: a request was throttled for user-2; only Amplitude's lane retried, and only
    # user-2's events waited for the throttle (the others of that request were resent at once).
    assert any(c.status == 429 for c in amplitude.calls) and amplitude.calls[-1].status == 200

    def retried(dest: str, reason: str) -> float:
        labels = {"destination": dest, "reason": reason}
        return registry.get_sample_value("router_delivery_retries_total", labels) or 0.0

    assert retried("amp", "throttled") >= 1
    for dest in ("mp", "ga", "slack"):
        assert all(retried(dest, r) == 0 for r in ("throttled", "resend", "http_429", "http_503"))
    throttled_users = {
        orjson.loads(c.body)["events"][i]["user_id"]
        for c in amplitude.calls
        if c.status == 429
        for i in c.answer["throttled_events"]
    }
    assert throttled_users == {"user-2"}
    dropped = registry.get_sample_value(
        "router_processor_dropped_total", {"destination": "ga", "reason": "unsupported_type"}
    )
    assert dropped == 3
