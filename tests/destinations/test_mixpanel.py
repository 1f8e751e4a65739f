"""Mixpanel against its fake (tests/fakes/mixpanel.py): mapping, auth, batching, errors."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from destinations.base import PermanentError, RetryableError
from destinations.http import HttpClient
from destinations.mixpanel.encoder import insert_id
from tests.destinations.catalog import attempt, encoded, make_plugin, recent, shown, track
from tests.fakes.mixpanel import FakeMixpanel

TOKEN = "mp-token-3f9a0c7d"
SECRET = "mp-secret-77aa10bb"
SA_SECRET = "sa-secret-55cc0011"


def settings(fake: FakeMixpanel | None = None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"project_token": TOKEN}
    if fake is not None:
        base["api_host"] = fake.base_url
    return {**base, **extra}


def test_residency_hosts_and_auth_modes() -> None:
    def first_url(**extra: Any) -> tuple[str, dict[str, str]]:
        plugin = make_plugin("mixpanel", settings(**extra))
        request = encoded(plugin, [track(1)]).requests[0]
        return request.url, dict(request.headers)

    url, headers = first_url()
    assert url == "https://api.mixpanel.com/import?strict=1"
    assert base64.b64decode(headers["Authorization"][6:]).decode() == f"{TOKEN}:"
    assert first_url(region="eu")[0].startswith("https://api-eu.mixpanel.com/import")
    assert first_url(region="in")[0].startswith("https://api-in.mixpanel.com/import")
    _, headers = first_url(api_secret=SECRET)
    assert base64.b64decode(headers["Authorization"][6:]).decode() == f"{SECRET}:"
    account = {"username": "sa.router", "secret": SA_SECRET, "project_id": "4242"}
    url, headers = first_url(service_account=account)
    assert url.endswith("/import?strict=1&project_id=4242")
    assert base64.b64decode(headers["Authorization"][6:]).decode() == f"sa.router:{SA_SECRET}"


def test_track_page_identify_group_alias_mapping() -> None:
    plugin = make_plugin("mixpanel", settings(page_events="named"))
    stamp = "2026-11-30T10:00:00.250Z"
    events = [
        track(1, "Order Completed", timestamp=stamp, properties={"revenue": 9.5}),
        {**track(2), "type": "page", "name": "Pricing", "category": "Docs"}
        | {"properties": {"path": "/p"}},
        {
            **track(3),
            "type": "identify",
            "traits": {"email": "a@b.c", "firstName": "Ada", "plan": "pro"},
        },
        {**track(4), "type": "group", "groupId": "acme", "traits": {"employees": 30}},
        {**track(5), "type": "alias", "previousId": "anon-old"},
    ]
    for event in events[1:]:
        event.pop("event", None)
    batch = encoded(plugin, events)
    assert not batch.failed
    by_endpoint = {r.endpoint: r for r in batch.requests}
    assert set(by_endpoint) == {"import", "engage", "groups"}
    imported = orjson.loads(by_endpoint["import"].body)
    assert by_endpoint["import"].covers == (0, 1, 4)
    order, page, alias = imported
    assert order["event"] == "Order Completed"
    props = order["properties"]
    assert props["time"] == 1796032800250  # 2026-11-30T10:00:00.250Z in ms
    assert props["distinct_id"] == "user-001"
    assert props["$insert_id"] == "msg-0001"
    assert props["$device_id"] == "anon-001" and props["$user_id"] == "user-001"
    assert props["revenue"] == 9.5 and props["ip"] == "203.0.113.7"
    assert page["event"] == "Viewed Docs Pricing Page" and page["properties"]["path"] == "/p"
    assert alias["event"] == "$identify"
    assert alias["properties"]["$device_id"] == "anon-old"
    assert alias["properties"]["$user_id"] == "user-002"
    [profile] = orjson.loads(by_endpoint["engage"].body)
    assert profile["$token"] == TOKEN and profile["$distinct_id"] == "user-000"
    assert profile["$set"] == {"$email": "a@b.c", "$first_name": "Ada", "plan": "pro"}
    [group] = orjson.loads(by_endpoint["groups"].body)
    assert group == {
        "$token": TOKEN,
        "$group_key": "company",
        "$group_id": "acme",
        "$set": {"employees": 30},
    }


def test_original_id_merge_turns_alias_into_merge() -> None:
    plugin = make_plugin("mixpanel", settings(id_merge="original", api_secret=SECRET))
    alias = {**track(1), "type": "alias", "previousId": "anon-old"}
    [request] = encoded(plugin, [alias]).requests
    [item] = orjson.loads(request.body)
    assert item["event"] == "$merge"
    assert item["properties"]["$distinct_ids"] == ["user-001", "anon-old"]


def test_insert_id_follows_mixpanel_rules() -> None:
    assert insert_id({"messageId": "ajs-1234-abcd"}) == "ajs-1234-abcd"
    long_id = "x" * 60
    derived = insert_id({"messageId": long_id})
    assert len(derived) <= 36 and derived.isalnum() and derived == insert_id({"messageId": long_id})
    assert insert_id({"messageId": "has spaces/slashes"}) != insert_id({"messageId": "other"})


def test_integrations_options_reach_the_encoder() -> None:
    plugin = make_plugin("mixpanel", settings(), name="Mixpanel")
    event = track(
        1, integrations={"Mixpanel": {"distinct_id": "crm-77", "properties": {"tier": 2}}}
    )
    [request] = encoded(plugin, [event]).requests
    [item] = orjson.loads(request.body)
    assert item["properties"]["distinct_id"] == "crm-77"
    assert item["properties"]["tier"] == 2


def test_batches_split_at_2000_events_and_2_mb() -> None:
    plugin = make_plugin("mixpanel", settings(), batch_size=2000)
    many = [track(i) for i in range(2000)]
    [one] = encoded(plugin, many).requests
    assert len(orjson.loads(one.body)) == 2000
    big = [track(i, properties={"blob": "x" * 300_000}) for i in range(10)]
    requests = encoded(plugin, big).requests
    assert len(requests) > 1
    assert all(len(r.body) <= 2 * 1024 * 1024 for r in requests)
    assert sorted(i for r in requests for i in r.covers) == list(range(10))
    huge = encoded(plugin, [track(0, properties={"blob": "x" * 1_100_000}), track(1)])
    assert set(huge.failed) == {0}
    assert "1 MB" in huge.failed[0].message


async def test_delivers_to_the_fake_with_per_event_failures() -> None:
    async with FakeMixpanel(token=TOKEN, api_secret=SECRET) as fake, HttpClient() as http:
        plugin = make_plugin("mixpanel", settings(fake, api_secret=SECRET), http=http)
        events = [track(i) for i in range(6)]
        events.append({**track(6), "type": "identify", "traits": {"plan": "pro"}})
        events.append({**track(7), "type": "group", "groupId": "g-1", "traits": {}})
        fake.refuse_insert_ids = {"msg-0002", "msg-0004"}
        verdicts = await attempt(plugin, events)
    refused = {i for i, v in enumerate(verdicts) if v != "delivered"}
    assert refused == {2, 4}
    for i in refused:
        error = verdicts[i]
        assert isinstance(error, PermanentError) and error.reason == "invalid_event"
        assert "properties.utm_source" in error.message
    assert set(fake.imported) == {"msg-0000", "msg-0001", "msg-0003", "msg-0005"}
    assert [p["$distinct_id"] for p in fake.profiles] == ["user-000"]
    assert [g["$group_id"] for g in fake.groups] == ["g-1"]


async def test_whole_request_answers_from_the_fake() -> None:
    async with FakeMixpanel(token=TOKEN) as fake, HttpClient() as http:
        wrong = make_plugin("mixpanel", settings(fake, api_secret="not-the-secret"), http=http)
        [verdict] = await attempt(wrong, [track(1)])
        assert isinstance(verdict, PermanentError) and verdict.reason == "http_401"
        plugin = make_plugin("mixpanel", settings(fake), http=http)
        fake.throttle = 1
        [verdict] = await attempt(plugin, [track(1)])
        assert isinstance(verdict, RetryableError) and verdict.reason == "http_429"
        [verdict] = await attempt(plugin, [track(1)])
        assert verdict == "delivered"
        bad_token = make_plugin(
            "mixpanel", {"project_token": "tok-wrong-123", "api_host": fake.base_url}, http=http
        )
        identify = {**track(2), "type": "identify", "traits": {"a": 1}}
        [verdict] = await attempt(bad_token, [identify])
        assert isinstance(verdict, PermanentError) and "Invalid token" in verdict.message


async def test_credentials_never_shown() -> None:
    account = {"username": "sa.router", "secret": SA_SECRET, "project_id": "4242"}
    async with (
        FakeMixpanel(token=TOKEN, service_account=("sa.router", SA_SECRET, "4242")) as fake,
        HttpClient() as http,
    ):
        plugin = make_plugin("mixpanel", settings(fake, service_account=account), http=http)
        identify = {**track(2), "type": "identify", "traits": {"a": 1}}
        for request in encoded(plugin, [track(1), identify]).requests:
            response = await plugin.send(request)
            assert not plugin.check(request, response)
            text = shown(plugin, request, response)
            for secret in (
                TOKEN,
                SA_SECRET,
                base64.b64encode(f"sa.router:{SA_SECRET}".encode()).decode(),
            ):
                assert secret not in text
    assert fake.imported and fake.profiles


def test_time_is_required() -> None:
    plugin = make_plugin("mixpanel", settings())
    event = track(1)
    del event["timestamp"], event["receivedAt"]
    batch = encoded(plugin, [event, track(2)])
    assert set(batch.failed) == {0}
    assert recent()  # the helper stays importable for the other partners' tests


@pytest.mark.parametrize("kind", ["track", "page", "screen", "identify", "group", "alias"])
def test_every_call_type_is_taken(kind: str) -> None:
    assert kind in make_plugin("mixpanel", settings()).call_types
