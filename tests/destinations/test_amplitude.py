"""Amplitude against its fake (tests/fakes/amplitude.py): mapping, limits, per-event answers."""

from __future__ import annotations

from typing import Any

import orjson

from destinations.base import PermanentError, RetryableError
from destinations.http import HttpClient
from tests.destinations.catalog import attempt, encoded, make_plugin, shown, track
from tests.fakes.amplitude import FakeAmplitude

KEY = "amp-key-1a2b3c4d5e"


def settings(fake: FakeAmplitude | None = None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"api_key": KEY}
    if fake is not None:
        base["api_host"] = fake.base_url
    return {**base, **extra}


def test_hosts_and_body_envelope() -> None:
    plugin = make_plugin("amplitude", settings(region="eu", min_id_length=3))
    [request] = encoded(plugin, [track(1)]).requests
    assert request.url == "https://api.eu.amplitude.com/2/httpapi"
    body = orjson.loads(request.body)
    assert body["api_key"] == KEY
    assert body["options"] == {"min_id_length": 3}
    us = make_plugin("amplitude", settings())
    assert encoded(us, [track(1)]).requests[0].url == "https://api2.amplitude.com/2/httpapi"
    assert "options" not in orjson.loads(encoded(us, [track(1)]).requests[0].body)


def test_event_mapping_with_revenue_identify_and_group() -> None:
    plugin = make_plugin("amplitude", settings(), name="Amplitude")
    order = track(
        1,
        "Order Completed",
        properties={"price": 12.5, "quantity": 2, "revenue": 25, "productId": "sku-9"},
        integrations={"Amplitude": {"session_id": 1700000000000, "device_id": "dev-override"}},
        context={"ip": "203.0.113.7", "os": {"name": "iOS", "version": "17"}, "locale": "fr-FR"},
    )
    page = {**track(2), "type": "page", "name": "Pricing"}
    identify = {**track(3), "type": "identify", "traits": {"plan": "pro"}}
    group = {**track(4), "type": "group", "groupId": "acme", "traits": {"seats": 5}}
    [request] = encoded(plugin, [order, page, identify, group]).requests
    events = orjson.loads(request.body)["events"]
    assert [e["event_type"] for e in events] == [
        "Order Completed",
        "Viewed Pricing Page",
        "$identify",
        "$identify",
        "$groupidentify",
    ]
    first = events[0]
    assert first["user_id"] == "user-001" and first["device_id"] == "dev-override"
    assert first["insert_id"] == "msg-0001" and first["session_id"] == 1700000000000
    assert (first["price"], first["quantity"], first["revenue"]) == (12.5, 2, 25.0)
    assert first["productId"] == "sku-9"
    assert (
        first["os_name"] == "iOS" and first["language"] == "fr-FR" and first["ip"] == "203.0.113.7"
    )
    assert isinstance(first["time"], int)
    assert events[1]["session_id"] == -1
    assert events[2]["user_properties"] == {"$set": {"plan": "pro"}}
    assert events[3]["groups"] == {"company": "acme"}
    assert events[4]["group_properties"] == {"$set": {"seats": 5}}
    assert events[4]["insert_id"] == "msg-0004-group"
    # Five Amplitude events for four Segment events: item 3 and 4 both belong to the group call.
    assert request.owners == (0, 1, 2, 3, 3)
    assert "alias" not in plugin.call_types


def test_requests_stay_within_2000_events_and_1_mb() -> None:
    plugin = make_plugin("amplitude", settings(), batch_size=2000)
    groups = [{**track(i), "type": "group", "groupId": f"g{i}"} for i in range(1500)]
    requests = encoded(plugin, groups).requests
    assert len(requests) == 2
    for request in requests:
        assert len(orjson.loads(request.body)["events"]) <= 2000
    big = [track(i, properties={"blob": "x" * 200_000}) for i in range(8)]
    requests = encoded(plugin, big).requests
    assert len(requests) >= 2 and all(len(r.body) <= 1_000_000 for r in requests)
    assert sorted(i for r in requests for i in r.covers) == list(range(8))
    too_big = encoded(plugin, [track(0, properties={"blob": "x" * 1_100_000})])
    assert set(too_big.failed) == {0}


async def test_delivers_to_the_fake() -> None:
    async with FakeAmplitude(api_key=KEY) as fake, HttpClient() as http:
        plugin = make_plugin("amplitude", settings(fake), http=http)
        verdicts = await attempt(plugin, [track(i) for i in range(5)])
    assert verdicts == ["delivered"] * 5
    assert set(fake.ingested) == {f"msg-{i:04d}" for i in range(5)}


async def test_invalid_events_fail_alone_and_the_rest_is_resent() -> None:
    async with (
        FakeAmplitude(api_key=KEY, invalid_event_types={"Broken"}) as fake,
        HttpClient() as http,
    ):
        plugin = make_plugin("amplitude", settings(fake), http=http)
        events = [track(0), track(1, "Broken"), track(2)]
        verdicts = await attempt(plugin, events)
        broken = verdicts[1]
        assert isinstance(broken, PermanentError) and broken.reason == "invalid_event"
        assert "event_type" in broken.message
        for verdict in (verdicts[0], verdicts[2]):
            assert isinstance(verdict, RetryableError) and verdict.reason == "resend"
            assert verdict.retry_after == 0.0
        assert not fake.ingested  # Amplitude ingests nothing from a 400
        # The lane resends the others; they arrive.
        assert await attempt(plugin, [events[0], events[2]]) == ["delivered"] * 2
    assert set(fake.ingested) == {"msg-0000", "msg-0002"}


async def test_throttled_users_wait_and_nobody_else_does() -> None:
    async with (
        FakeAmplitude(api_key=KEY, throttle_users={"user-001": 1}) as fake,
        HttpClient() as http,
    ):
        plugin = make_plugin("amplitude", settings(fake), http=http)
        events = [track(i) for i in range(6)]  # users 000, 001, 002 twice each
        verdicts = await attempt(plugin, events)
        for i, verdict in enumerate(verdicts):
            assert isinstance(verdict, RetryableError)
            if events[i]["userId"] == "user-001":
                assert (
                    verdict.reason == "throttled" and verdict.retry_after is None
                )  # no lane pause
            else:
                assert verdict.reason == "resend" and verdict.retry_after == 0.0
        assert await attempt(plugin, events) == ["delivered"] * 6


async def test_daily_quota_is_dead_lettered_and_bad_key_fails_the_request() -> None:
    async with FakeAmplitude(api_key=KEY, quota_users={"user-002"}) as fake, HttpClient() as http:
        plugin = make_plugin("amplitude", settings(fake), http=http)
        verdicts = await attempt(plugin, [track(1), track(2)])
        assert isinstance(verdicts[1], PermanentError) and verdicts[1].reason == "daily_quota"
        assert isinstance(verdicts[0], RetryableError) and verdicts[0].reason == "resend"
        wrong = make_plugin(
            "amplitude", {"api_key": "amp-wrong-0000", "api_host": fake.base_url}, http=http
        )
        [verdict] = await attempt(wrong, [track(1)])
        assert isinstance(verdict, PermanentError) and verdict.reason == "http_400"
        request = encoded(plugin, [track(1)]).requests[0]
        response = await plugin.send(request)
        assert KEY not in shown(plugin, request, response)
