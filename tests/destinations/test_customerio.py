"""Customer.io: the plugin against a local Track API written from Customer.io's reference."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from destinations.base import (
    DestinationError,
    Encoded,
    PartnerRequest,
    PluginContext,
    RejectedStatus,
    RetryableStatus,
)
from destinations.customerio import CustomerIODestination, event_ulid
from destinations.customerio.encoder import MAX_OPERATION_BYTES, MAX_REQUEST_BYTES
from destinations.http import HttpClient
from router.config import Destination
from tests.destinations.customerio_fake import FakeCustomerIO

SITE_ID = "site-3f9a1c0b7e"
API_KEY = "cio-key-8d2e44b1a9c07f"
TS = "2026-11-23T10:00:00.500Z"
TS_UNIX = 1795428000


def plugin(
    url: str | None = None, *, http: HttpClient | None = None, **settings: Any
) -> CustomerIODestination:
    data: dict[str, Any] = {"site_id": SITE_ID, "api_key": API_KEY, **settings}
    if url is not None:
        data["url"] = url
    destination = Destination.model_validate(
        {
            "id": "cio",
            "name": "Customer.io",
            "type": "customerio",
            "sources": ["web"],
            "settings": data,
            "delivery": {"batch_size": 1000, "timeout": "5s"},
        }
    )
    return CustomerIODestination(destination, PluginContext(http=http or HttpClient()))


def ev(kind: str, index: int = 0, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": kind,
        "messageId": f"m-{kind}-{index}",
        "timestamp": TS,
        "receivedAt": TS,
        "context": {"page": {"url": "https://shop.example/cart?x=1", "path": "/cart"}},
        "integrations": {},
    }
    return {**base, **fields}


def mixed_batch() -> list[dict[str, Any]]:
    return [
        ev(
            "identify",
            userId="u1",
            anonymousId="a1",
            traits={"email": "u1@example.com", "plan": "pro", "createdAt": "2026-01-02T03:04:05Z"},
        ),
        ev("track", userId="u1", event="Order Completed", properties={"total": 42.5}),
        ev("page", userId="u1", name="Cart", properties={"title": "Your cart"}),
        ev("screen", userId="u1", name="Settings", properties={"tab": "privacy"}),
        ev("group", userId="u1", groupId="acme", traits={"name": "Acme", "seats": 50}),
        ev("track", 1, anonymousId="a9", event="Viewed Pricing", properties={"plan": "pro"}),
        ev("page", 1, anonymousId="a9", properties={"url": "https://shop.example/pricing"}),
    ]


@pytest.fixture
async def cio() -> AsyncIterator[FakeCustomerIO]:
    async with FakeCustomerIO(site_id=SITE_ID, api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient() as client:
        yield client


async def deliver(
    destination: CustomerIODestination, events: list[dict[str, Any]]
) -> tuple[Encoded[PartnerRequest], dict[int, DestinationError]]:
    """One attempt as the delivery lane makes it: encode, send, check; refusals by position."""
    encoded = destination.encode(events)
    refused: dict[int, DestinationError] = dict(encoded.failed)
    for request in encoded.requests:
        response = await destination.send(request)
        for index, error in destination.check(request, response).items():
            refused[request.covers[index]] = error
    return encoded, refused


async def test_every_call_type_lands_as_customerio_documents_it(
    cio: FakeCustomerIO, http: HttpClient
) -> None:
    destination = plugin(cio.url, http=http)
    events = mixed_batch()
    encoded, refused = await deliver(destination, events)
    assert refused == {}
    assert cio.problems == []
    # One batch for the known person and the object, one v1 call per anonymous event.
    assert [urlpath(r) for r in encoded.requests] == ["/api/v2/batch"] + ["/api/v1/events"] * 2
    assert encoded.requests[0].covers == (0, 1, 2, 3, 4)
    identify, track, page, screen, group = cio.operations
    assert identify == {
        "type": "person",
        "identifiers": {"id": "u1"},
        "action": "identify",
        "attributes": {
            "email": "u1@example.com",
            "plan": "pro",
            "created_at": 1767323045,
            "anonymous_id": "a1",
        },
        "timestamp": TS_UNIX,
    }
    assert track == {
        "type": "person",
        "identifiers": {"id": "u1"},
        "action": "event",
        "name": "Order Completed",
        "id": event_ulid(events[1]),
        "attributes": {"total": 42.5},
        "timestamp": TS_UNIX,
    }
    assert page["action"] == "page" and page["name"] == "https://shop.example/cart?x=1"
    assert page["attributes"] == {"title": "Your cart", "name": "Cart"}
    assert screen["action"] == "screen" and screen["name"] == "Settings"
    assert group == {
        "type": "object",
        "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "action": "identify",
        "attributes": {"name": "Acme", "seats": 50},
        "cio_relationships": [{"identifiers": {"id": "u1"}}],
    }
    viewed, pricing = cio.anonymous_events
    assert viewed == {
        "anonymous_id": "a9",
        "name": "Viewed Pricing",
        "id": event_ulid(events[5]),
        "type": "event",
        "data": {"plan": "pro"},
        "timestamp": TS_UNIX,
    }
    assert pricing["type"] == "page" and pricing["name"] == "https://shop.example/pricing"


def urlpath(request: PartnerRequest) -> str:
    return urlsplit(request.url).path


def test_region_chooses_the_track_host() -> None:
    [us] = plugin().encode([ev("track", userId="u", event="E")]).requests
    [eu] = plugin(region="eu").encode([ev("track", userId="u", event="E")]).requests
    assert us.url == "https://track.customer.io/api/v2/batch"
    assert eu.url == "https://track-eu.customer.io/api/v2/batch"
    auth = dict(us.headers)["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == f"{SITE_ID}:{API_KEY}"


async def test_redelivered_events_keep_their_id_and_are_deduplicated(
    cio: FakeCustomerIO, http: HttpClient
) -> None:
    destination = plugin(cio.url, http=http)
    event = ev("track", userId="u1", event="Signed Up")
    first = event_ulid(event)
    assert first == event_ulid(dict(event)) and len(first) == 26
    assert first != event_ulid({**event, "messageId": "other"})
    await deliver(destination, [event])
    await deliver(destination, [event])  # the retry of an attempt whose answer was lost
    assert [op["name"] for op in cio.operations] == ["Signed Up"]


async def test_requests_are_split_under_500kb_and_oversized_events_fail_alone(
    cio: FakeCustomerIO, http: HttpClient
) -> None:
    destination = plugin(cio.url, http=http)
    blob = "x" * 20_000
    events = [
        ev("track", i, userId=f"u{i}", event="Big", properties={"blob": blob}) for i in range(60)
    ]
    events.insert(7, ev("track", 99, userId="u99", event="Huge", properties={"b": "y" * 40_000}))
    encoded, refused = await deliver(destination, events)
    assert set(refused) == {7}
    assert refused[7].reason == "too_large" and not refused[7].retriable
    assert "32,000" in refused[7].message
    assert len(encoded.requests) == 3
    assert all(len(r.body) < MAX_REQUEST_BYTES for r in encoded.requests)
    covered = [p for r in encoded.requests for p in r.covers]
    assert covered == [p for p in range(61) if p != 7]
    assert len(cio.operations) == 60 and cio.problems == []
    assert MAX_OPERATION_BYTES == 32_000


async def test_refused_operations_fail_alone_and_the_rest_is_delivered(
    cio: FakeCustomerIO, http: HttpClient
) -> None:
    destination = plugin(cio.url, http=http)
    events = [ev("identify", i, userId=f"u{i}", traits={"plan": "pro"}) for i in range(5)]
    events[1]["traits"] = {"k" * 200: "attribute name over 150 bytes"}
    events[3] = ev(
        "group", 3, userId="u3", groupId="g", integrations={"Customer.io": {"object_type_id": "0"}}
    )
    _encoded, refused = await deliver(destination, events)
    assert set(refused) == {1, 3}
    assert refused[1].reason == "rejected_item" and not refused[1].retriable
    assert "attribute name cannot be longer than 150 bytes" in refused[1].message
    assert "object_type_id" in refused[3].message
    assert sorted(op["identifiers"]["id"] for op in cio.operations) == ["u0", "u2", "u4"]


async def test_integrations_options_reach_the_group_operation(
    cio: FakeCustomerIO, http: HttpClient
) -> None:
    destination = plugin(cio.url, http=http, object_type_id="3")
    options = {"object_type_id": "2", "relationship_attributes": {"role": "admin"}}
    events = [
        ev("group", 0, userId="u1", groupId="acme", integrations={"Customer.io": options}),
        ev("group", 1, userId="u2", groupId="initech"),
        ev("group", 2, anonymousId="a", groupId="anon-co"),
    ]
    _encoded, refused = await deliver(destination, events)
    assert refused == {}
    first, second, third = cio.operations
    assert first["identifiers"] == {"object_type_id": "2", "object_id": "acme"}
    assert first["cio_relationships"] == [
        {"identifiers": {"id": "u1"}, "relationship_attributes": {"role": "admin"}}
    ]
    assert second["identifiers"]["object_type_id"] == "3"
    assert "cio_relationships" not in third


def test_events_nobody_can_be_found_by_are_refused_with_the_reason() -> None:
    destination = plugin()
    events = [
        ev("identify", 0, anonymousId="a1", traits={"plan": "free"}),
        ev("identify", 1, anonymousId="a1", traits={"email": "who@example.com"}),
        ev("track", 2, event="Ghost"),
        ev("track", 3, userId="u", event=""),
        ev("alias", 4, userId="u", previousId="a"),
    ]
    encoded = destination.encode(events)
    assert {p: e.reason for p, e in encoded.failed.items()} == {
        0: "missing_identity",
        2: "missing_identity",
        3: "encode",
        4: "unsupported_type",
    }
    [request] = encoded.requests
    assert request.covers == (1,)
    assert orjson.loads(request.body)["batch"][0]["identifiers"] == {"email": "who@example.com"}


async def test_throttling_and_refusals_by_status(cio: FakeCustomerIO, http: HttpClient) -> None:
    destination = plugin(cio.url, http=http)
    [request] = destination.encode([ev("track", userId="u", event="E")]).requests
    cio.throttle(1, retry_after="3")
    with pytest.raises(RetryableStatus) as throttled:
        destination.check(request, await destination.send(request))
    assert throttled.value.retry_after == 3.0 and throttled.value.reason == "http_429"
    assert destination.check(request, await destination.send(request)) == {}
    wrong = plugin(cio.url, http=http, api_key="not-the-key")
    [bad] = wrong.encode([ev("track", userId="u", event="E")]).requests
    with pytest.raises(RejectedStatus) as refused:
        wrong.check(bad, await wrong.send(bad))
    assert refused.value.reason == "http_401"


async def test_health_check_uses_the_credentials_and_region(
    cio: FakeCustomerIO, http: HttpClient
) -> None:
    ok, detail = await plugin(cio.url, http=http).health_check()
    assert ok, detail
    ok, detail = await plugin(cio.url, http=http, api_key="wrong-key").health_check()
    assert not ok and "refused" in detail
    cio.region = "eu"
    ok, detail = await plugin(cio.url, http=http).health_check()
    assert ok  # an explicit url is not checked against the region
    assert API_KEY not in detail


async def test_delete_user_request_is_accepted(cio: FakeCustomerIO, http: HttpClient) -> None:
    destination = plugin(cio.url, http=http)
    request = destination.delete_user("u1")
    assert destination.check(request, await destination.send(request)) == {}
    assert cio.operations == [{"type": "person", "identifiers": {"id": "u1"}, "action": "delete"}]
