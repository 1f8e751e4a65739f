"""GA4 against its fake (tests/fakes/ga4.py): names, e-commerce mapping, grouping, validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from destinations.base import PermanentError
from destinations.ga4.names import event_name, legal_name
from destinations.http import HttpClient
from tests.destinations.catalog import attempt, encoded, make_plugin, recent, shown, track
from tests.fakes.ga4 import FakeGA4

SECRET = "ga4-secret-9f8e7d6c"
MID = "G-TEST12345"


def settings(fake: FakeGA4 | None = None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"measurement_id": MID, "api_secret": SECRET}
    if fake is not None:
        base["api_host"] = fake.base_url
    return {**base, **extra}


def body_of(plugin: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.body) for r in encoded(plugin, events).requests]


def test_names_are_made_legal() -> None:
    assert event_name("Order Shipped!") == "order_shipped"
    assert event_name("3D Model Viewed") == "x_3d_model_viewed"
    assert event_name("session_start") == "x_session_start"
    assert event_name("Google Sign In") == "x_google_sign_in"
    assert event_name("Ünïcode Event") == "ünïcode_event"
    assert len(event_name("A really long event name that goes on and on forever")) <= 40
    assert legal_name("firebase_thing") == "x_firebase_thing"
    assert legal_name("a" * 50, limit=24) == "a" * 24


def test_ecommerce_events_become_recommended_events() -> None:
    plugin = make_plugin("ga4", settings())
    products = [
        {
            "product_id": "p1",
            "sku": "s1",
            "name": "Shoe",
            "price": 40,
            "quantity": 2,
            "color": "red",
        },
        {"sku": "s2", "name": "Sock", "price": 5, "position": 3},
    ]
    order = track(
        1,
        "Order Completed",
        properties={
            "order_id": "o-9",
            "revenue": 85,
            "tax": 4,
            "shipping": 6,
            "coupon": "WELCOME",
            "currency": "EUR",
            "products": products,
            "store": "Berlin",
        },
    )
    added = track(
        2,
        "Product Added",
        properties={"product_id": "p1", "name": "Shoe", "price": 40, "quantity": 3},
    )
    search = track(3, "Products Searched", properties={"query": "blue shoes"})
    custom = track(4, "Video Played!", properties={"length": 30, "nested": {"x": 1}, "ok": True})
    page = {**track(5), "type": "page", "properties": {"url": "https://x.test/a", "title": "A"}}
    page.pop("event")
    bodies = body_of(plugin, [order, added, search, custom, page])
    events = [e for body in bodies for e in body["events"]]
    by_name = {e["name"]: e for e in events}
    purchase, add, found = by_name["purchase"], by_name["add_to_cart"], by_name["search"]
    video, view = by_name["video_played"], by_name["page_view"]
    assert purchase["name"] == "purchase"
    params = purchase["params"]
    assert (
        params["transaction_id"] == "o-9" and params["value"] == 85 and params["currency"] == "EUR"
    )
    assert params["tax"] == 4 and params["shipping"] == 6 and params["coupon"] == "WELCOME"
    assert params["store"] == "Berlin" and "order_id" not in params
    assert params["items"][0] == {
        "item_id": "p1",
        "item_name": "Shoe",
        "price": 40,
        "quantity": 2,
        "color": "red",
    }
    assert params["items"][1] == {"item_id": "s2", "item_name": "Sock", "price": 5, "index": 3}
    assert add["params"]["value"] == 120 and add["params"]["currency"] == "USD"
    assert add["params"]["items"] == [
        {"item_id": "p1", "item_name": "Shoe", "price": 40, "quantity": 3}
    ]
    assert found["params"]["search_term"] == "blue shoes"
    assert video["params"]["length"] == 30 and video["params"]["ok"] == "true"
    assert "nested" not in video["params"]
    assert (
        view["params"]["page_location"] == "https://x.test/a"
        and view["params"]["page_title"] == "A"
    )
    for event in events:
        assert event["params"]["engagement_time_msec"] == 1
        assert isinstance(event["timestamp_micros"], int)


def test_requests_are_per_client_and_at_most_25_events() -> None:
    plugin = make_plugin("ga4", settings(user_properties=["plan"]), batch_size=25, name="GA4")
    events = [
        track(i, context={"traits": {"plan": "pro"}}, integrations={"GA4": {"sessionId": 77}})
        for i in range(25)
    ]
    requests = encoded(plugin, events).requests
    assert len(requests) == 3  # three clients: anon-000, anon-001, anon-002
    for request in requests:
        body = orjson.loads(request.body)
        assert body["client_id"].startswith("anon-") and body["user_id"].startswith("user-")
        assert body["user_properties"] == {"plan": {"value": "pro"}}
        assert all(e["params"]["session_id"] == 77 for e in body["events"])
        assert all(events[i]["anonymousId"] == body["client_id"] for i in request.covers)
    one_client = [track(i * 3) for i in range(30)]
    plugin = make_plugin("ga4", settings(), batch_size=25)
    sizes = [len(orjson.loads(r.body)["events"]) for r in encoded(plugin, one_client[:25]).requests]
    assert sizes == [25]
    field_plugin = make_plugin("ga4", settings(client_id_field="context.ga_client_id"))
    [body] = body_of(field_plugin, [track(1, context={"ga_client_id": "123.456"})])
    assert body["client_id"] == "123.456"


def test_events_older_than_72_hours_are_refused_visibly() -> None:
    plugin = make_plugin("ga4", settings(), batch_size=2)
    old = track(1, timestamp=recent(minutes=73 * 60))
    batch = encoded(plugin, [old, track(2)])
    assert set(batch.failed) == {0}
    assert batch.failed[0].reason == "too_old"
    future = track(3, timestamp="2999-01-01T00:00:00.000Z")
    [body] = body_of(plugin, [future])
    assert "timestamp_micros" not in body["events"][0]


async def test_fake_collects_every_event_as_valid() -> None:
    async with FakeGA4(measurement_id=MID, api_secret=SECRET) as fake, HttpClient() as http:
        plugin = make_plugin("ga4", settings(fake), http=http, batch_size=25)
        weird = track(9, "_Reserved: session_start", properties={"x" * 60: "y" * 300, "ga_id": 1})
        events = [track(i, "Product Viewed", properties={"product_id": f"p{i}"}) for i in range(6)]
        verdicts = await attempt(plugin, [*events, weird])
    assert verdicts == ["delivered"] * 7
    assert not fake.dropped, fake.dropped
    assert len(fake.collected) == 7
    names = {event["name"] for _, event in fake.collected}
    assert names == {"view_item", "reserved_session_start"}
    assert all(call.query["api_secret"] == SECRET for call in fake.calls)


async def test_debug_endpoint_explains_refusals_per_event() -> None:
    async with FakeGA4(measurement_id=MID, api_secret=SECRET) as fake, HttpClient() as http:
        plugin = make_plugin("ga4", settings(fake, event_names={"Promo": "ad_click_x"}), http=http)
        [request] = encoded(plugin, [track(1)]).requests
        tester = plugin.event_tester_request(request)
        assert "/debug/mp/collect?" in tester.url
        assert orjson.loads(tester.body)["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"
        response = await plugin.send(tester)
        assert plugin.check(tester, response) == {}
        # A name the fake reserves: the validation server names the event, the check maps it.
        body = orjson.loads(tester.body)
        body["events"][0]["name"] = "session_start"
        broken = dataclasses.replace(tester, body=orjson.dumps(body))
        response = await plugin.send(broken)
        refused = plugin.check(broken, response)
        assert isinstance(refused[0], PermanentError) and "NAME_RESERVED" in refused[0].message
        assert not fake.collected  # the validation server records nothing
        assert SECRET not in shown(plugin, broken, response)
