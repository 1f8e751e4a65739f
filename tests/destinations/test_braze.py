"""Braze: the plugin against a local REST API written from Braze's reference."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from destinations.base import (
    DestinationError,
    Encoded,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
    RejectedStatus,
    RetryableStatus,
)
from destinations.braze import BrazeDestination, BrazeRequest
from destinations.http import HttpClient
from router.broker.embedded import free_port
from router.config import Destination
from tests.destinations.braze_fake import FakeBraze

API_KEY = "braze-rest-key-5e1f0c2a-77d4"
TS = "2026-11-23T10:00:00.500Z"


def plugin(url: str, *, http: HttpClient | None = None, **settings: Any) -> BrazeDestination:
    destination = Destination.model_validate(
        {
            "id": "braze",
            "name": "Braze",
            "type": "braze",
            "sources": ["web"],
            "settings": {"rest_endpoint": url, "api_key": API_KEY, **settings},
            "delivery": {"batch_size": 750, "timeout": "5s"},
        }
    )
    return BrazeDestination(destination, PluginContext(http=http or HttpClient()))


def ev(kind: str, index: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": f"m-{kind}-{index}",
        "timestamp": TS,
        "receivedAt": TS,
        "integrations": {},
        **fields,
    }


def order(index: int, user: str, products: list[dict[str, Any]], **props: Any) -> dict[str, Any]:
    properties = {"order_id": f"o-{index}", "currency": "eur", "products": products, **props}
    return ev("track", index, userId=user, event="Order Completed", properties=properties)


@pytest.fixture
async def braze() -> AsyncIterator[FakeBraze]:
    async with FakeBraze(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient() as client:
        yield client


async def deliver(
    destination: BrazeDestination, events: list[dict[str, Any]]
) -> tuple[Encoded[PartnerRequest], dict[int, DestinationError]]:
    """One attempt as the delivery lane makes it: encode, send, check; refusals by position."""
    encoded = destination.encode(events)
    assert isinstance(encoded, Encoded)
    refused: dict[int, DestinationError] = dict(encoded.failed)
    for request in encoded.requests:
        response = await destination.send(request)
        for index, error in destination.check(request, response).items():
            refused[request.covers[index]] = error
    return encoded, refused


async def test_identify_track_orders_and_groups_land_as_braze_documents_them(
    braze: FakeBraze, http: HttpClient
) -> None:
    destination = plugin(braze.url, http=http, app_id="app-1")
    traits = {
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "gender": "female",
        "birthday": "1815-12-10T00:00:00Z",
        "address": {"city": "London", "country": "GB", "street": "St James's Square"},
        "plan": "pro",
    }
    products = [
        {"product_id": "p-1", "name": "Monitor", "price": 199.5, "quantity": 2},
        {"sku": "kb-9", "price": 49, "category": "Keyboards"},
    ]
    events = [
        ev("identify", userId="u1", traits=traits),
        ev("track", 1, userId="u1", event="Signed Up", properties={"via": "ads"}),
        order(2, "u1", products),
        ev("group", 3, userId="u1", groupId="acme"),
        ev("identify", 4, anonymousId="anon-7", traits={"plan": "free"}),
        ev("track", 5, anonymousId="anon-7", event="Viewed Pricing"),
    ]
    encoded, refused = await deliver(destination, events)
    assert refused == {} and braze.problems == [] and braze.dropped == []
    [request] = encoded.requests
    assert dict(request.headers)["Authorization"] == f"Bearer {API_KEY}"
    assert request.url == f"{braze.url}/users/track"
    assert braze.users["u1"] == {
        "external_id": "u1",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "gender": "F",
        "dob": "1815-12-10",
        "home_city": "London",
        "country": "GB",
        "plan": "pro",
        "ab_segment_group_acme": True,
    }
    assert braze.users[("anonymous_id", "anon-7")] == {
        "user_alias": {"alias_name": "anon-7", "alias_label": "anonymous_id"},
        "plan": "free",
    }
    signed_up, pricing = braze.events
    assert signed_up == {
        "external_id": "u1",
        "app_id": "app-1",
        "name": "Signed Up",
        "time": "2026-11-23T10:00:00.500Z",
        "properties": {"via": "ads"},
    }
    assert pricing["user_alias"] == {"alias_name": "anon-7", "alias_label": "anonymous_id"}
    monitor, keyboard = braze.purchases
    assert monitor == {
        "external_id": "u1",
        "app_id": "app-1",
        "product_id": "p-1",
        "currency": "EUR",
        "price": 199.5,
        "time": "2026-11-23T10:00:00.500Z",
        "quantity": 2,
        "properties": {"name": "Monitor", "order_id": "o-2"},
    }
    assert keyboard["product_id"] == "kb-9" and "quantity" not in keyboard
    # A gender Braze has no code for is left out (null would clear the stored one).
    await deliver(destination, [ev("identify", 7, userId="u1", traits={"gender": "agender"})])
    assert braze.users["u1"]["gender"] == "F"
    await deliver(destination, [ev("identify", 8, userId="u1", traits={"gender": None})])
    assert braze.users["u1"]["gender"] is None
    # An order whose products lack prices is a custom event, never an invented revenue.
    await deliver(destination, [order(6, "u1", [{"sku": "x"}])])
    assert braze.events[-1]["name"] == "Order Completed"
    assert braze.events[-1]["properties"]["products"] == [{"sku": "x"}]


async def test_requests_hold_at_most_the_object_limit_and_keep_an_events_objects_together(
    braze: FakeBraze, http: HttpClient
) -> None:
    braze.limit = 50
    destination = plugin(braze.url, http=http, max_objects_per_request=50)
    product = {"product_id": "p", "price": 1.0}
    events = [ev("track", i, userId=f"u{i}", event="E") for i in range(120)]
    events.insert(48, order(900, "u900", [product] * 5))  # would straddle the 50 boundary
    events.insert(10, order(901, "u901", [product] * 60))  # more than one request can hold
    encoded, refused = await deliver(destination, events)
    assert set(refused) == {10}
    assert refused[10].reason == "too_large" and not refused[10].retriable
    bodies = [orjson.loads(r.body) for r in encoded.requests]
    assert all(sum(len(v) for v in b.values()) <= 50 for b in bodies)
    assert [p for r in encoded.requests for p in r.covers] == [p for p in range(122) if p != 10]
    assert len(braze.events) == 120 and len(braze.purchases) == 5
    assert braze.problems == []


async def test_refused_objects_fail_their_event_alone(braze: FakeBraze, http: HttpClient) -> None:
    destination = plugin(braze.url, http=http)
    events = [
        ev("track", 0, userId="u0", event="Fine"),
        ev("track", 1, userId="u1", event="Bad", properties={"$reserved": 1}),
        order(
            2,
            "u2",
            [{"product_id": "a", "price": 1}, {"product_id": "b", "price": 2, "quantity": 150}],
        ),
        ev("identify", 3, userId="u3", traits={"birthday": "not a date"}),
        ev("identify", 4, userId="u4", traits={"plan": "pro"}),
    ]
    _encoded, refused = await deliver(destination, events)
    assert set(refused) == {1, 2, 3}
    assert all(e.reason == "rejected_item" and not e.retriable for e in refused.values())
    assert "invalid property name" in refused[1].message
    assert "quantity" in refused[2].message and "purchases" in refused[2].message
    assert "dob" in refused[3].message
    assert [e["name"] for e in braze.events] == ["Fine"]
    assert [p["product_id"] for p in braze.purchases] == ["a"]  # Braze kept the valid one
    assert "u4" in braze.users


async def test_429_waits_for_the_rate_limit_reset(braze: FakeBraze, http: HttpClient) -> None:
    destination = plugin(braze.url, http=http)
    [request] = destination.encode([ev("track", userId="u", event="E")]).requests
    braze.throttle(1, reset_in=30)
    with pytest.raises(RetryableStatus) as caught:
        destination.check(request, await destination.send(request))
    assert caught.value.reason == "http_429"
    assert caught.value.retry_after is not None and 27 <= caught.value.retry_after <= 31
    assert destination.check(request, await destination.send(request)) == {}
    # Retry-After, when sent, wins over the window's reset.
    both = PartnerResponse(
        status=429,
        headers=(("Retry-After", "4"), ("X-RateLimit-Reset", str(int(time.time()) + 60))),
        body=b'{"message": "API rate limit exceeded"}',
        elapsed=0.01,
    )
    with pytest.raises(RetryableStatus) as caught:
        destination.check(request, both)
    assert caught.value.retry_after == 4.0


async def test_fatal_answers_refuse_the_whole_request(braze: FakeBraze, http: HttpClient) -> None:
    wrong = plugin(braze.url, http=http, api_key="not-the-right-key")
    [request] = wrong.encode([ev("track", userId="u", event="E")]).requests
    with pytest.raises(RejectedStatus) as caught:
        wrong.check(request, await wrong.send(request))
    assert caught.value.reason == "http_401"
    assert isinstance(request, BrazeRequest)
    odd = PartnerResponse(status=201, headers=(), body=b'{"message": "nope"}', elapsed=0.01)
    with pytest.raises(DestinationError) as fatal:
        wrong.check(request, odd)
    assert not fatal.value.retriable and "nope" in fatal.value.message
    queued = PartnerResponse(status=202, headers=(), body=b'{"message": "queued"}', elapsed=0.0)
    assert wrong.check(request, queued) == {}


async def test_integrations_options_reach_the_objects(braze: FakeBraze, http: HttpClient) -> None:
    destination = plugin(braze.url, http=http)
    braze.users["existing"] = {"external_id": "existing"}
    events = [
        ev(
            "track",
            0,
            userId="u1",
            event="E",
            integrations={"Braze": {"app_id": "ios-app", "braze_id": "b-42"}},
        ),
        ev(
            "identify",
            1,
            userId="newcomer",
            traits={"a": 1},
            integrations={"Braze": {"update_existing_only": True}},
        ),
        ev(
            "identify",
            2,
            userId="existing",
            traits={"a": 2},
            integrations={"Braze": {"update_existing_only": True}},
        ),
    ]
    _encoded, refused = await deliver(destination, events)
    assert refused == {}
    [event] = braze.events
    assert event["braze_id"] == "b-42" and event["app_id"] == "ios-app"
    assert "external_id" not in event
    assert "newcomer" not in braze.users  # update-only: Braze creates nobody
    assert braze.users["existing"]["a"] == 2


def test_anonymous_users_can_be_refused_and_other_calls_are_not_taken() -> None:
    destination = plugin("https://rest.iad-01.braze.com", alias_label=None)
    events = [
        ev("track", 0, anonymousId="a", event="E"),
        ev("track", 1, event="E"),
        ev("page", 2, userId="u", name="Home"),
        ev("track", 3, userId="u", event=""),
        ev("track", 4, userId="u", event="Fine"),
    ]
    encoded = destination.encode(events)
    assert {p: e.reason for p, e in encoded.failed.items()} == {
        0: "missing_identity",
        1: "missing_identity",
        2: "unsupported_type",
        3: "encode",
    }
    assert [r.covers for r in encoded.requests] == [(4,)]


async def test_delete_user_and_health_check(braze: FakeBraze, http: HttpClient) -> None:
    destination = plugin(braze.url, http=http)
    request = destination.delete_user("u1")
    assert destination.check(request, await destination.send(request)) == {}
    assert braze.deleted == ["u1"]
    assert (await destination.health_check())[0]
    dead = plugin(f"http://127.0.0.1:{free_port()}", http=http)
    ok, detail = await dead.health_check()
    assert not ok and "unreachable" in detail
