"""Slack against its fake (tests/fakes/slack.py): templates, safety, chosen events, answers."""

from __future__ import annotations

from typing import Any

import orjson

from destinations.base import PermanentError, RetryableError
from destinations.http import HttpClient
from destinations.registry import validate_settings
from destinations.slack.template import compile_template, render
from tests.destinations.catalog import attempt, encoded, make_plugin, shown, track
from tests.fakes.slack import FakeSlack

TEMPLATES = {
    "Order Completed": "*{{name}}* ordered {{properties.total}} <{{context.page.url}}>",
    "Signed Up": "{{name}} joined with {{#properties.plans}}{{.}} {{/properties.plans}}",
}


def settings(
    url: str = "https://hooks.slack.com/services/T1/B1/secret-token-123", **extra: Any
) -> dict[str, Any]:
    return {"webhook_url": url, "templates": TEMPLATES, **extra}


def text_of(plugin: Any, event: dict[str, Any]) -> str:
    [request] = encoded(plugin, [event]).requests
    return str(orjson.loads(request.body)["text"])


def test_templates_render_event_fields_escaped_for_slack() -> None:
    plugin = make_plugin("slack", settings(username="router", icon_emoji=":rocket:"))
    order = track(
        1,
        "Order Completed",
        properties={"total": 42},
        context={
            "traits": {"firstName": "Ada", "lastName": "<Lovelace>"},
            "page": {"url": "https://s.test/?a=1&b=2"},
        },
    )
    [request] = encoded(plugin, [order]).requests
    body = orjson.loads(request.body)
    assert body["text"] == "*Ada &lt;Lovelace&gt;* ordered 42 <https://s.test/?a=1&amp;b=2>"
    assert body["username"] == "router" and body["icon_emoji"] == ":rocket:"
    signed = track(2, "Signed Up", properties={"plans": ["free", "pro"]})
    assert text_of(plugin, signed) == "user-002 joined with free pro "


def test_templates_cannot_run_code_or_read_files() -> None:
    event = {"event": "E", "properties": {"a": {"b": True}, "items": [1, 2]}}
    unsafe = "{{event.upper}}|{{properties.__class__}}|{{> /etc/passwd}}|{{properties.a.__dict__}}"
    assert render(compile_template(unsafe), event) == "|||"
    assert render(compile_template("{{properties.a}} {{properties.items}}"), event) == (
        '{"b":true} [1,2]'
    )
    problems = validate_settings("slack", settings(templates={"X": "{{#a}}{{/b}}"}))
    assert problems and problems[0][0] == "templates"


def test_only_chosen_events_are_posted() -> None:
    plugin = make_plugin("slack", settings(), batch_size=3)
    identify = {**track(2), "type": "identify", "traits": {"email": "a@b.c"}}
    batch = encoded(plugin, [track(1, "Page Scrolled"), identify, track(3, "Order Completed")])
    # Not chosen is not a failure: counted as filtered by the lane, never dead-lettered.
    assert not batch.failed
    assert batch.skipped == {0: "not_chosen", 1: "not_chosen"}
    assert [r.covers for r in batch.requests] == [(2,)]
    with_identify = make_plugin("slack", settings(identify_template="{{name}} is {{traits.email}}"))
    assert text_of(with_identify, identify) == "a@b.c is a@b.c"
    fallback = make_plugin("slack", settings(default_template="{{userId}} did {{event}}"))
    assert text_of(fallback, track(3, "Page Scrolled")) == "user-000 did Page Scrolled"
    assert plugin.call_types == frozenset({"track", "identify"})


async def test_posts_to_the_fake_and_maps_its_answers() -> None:
    async with FakeSlack() as fake, HttpClient() as http:
        plugin = make_plugin("slack", settings(fake.url), http=http)
        order = track(1, "Order Completed", properties={"total": 5})
        assert await attempt(plugin, [order]) == ["delivered"]
        assert fake.messages[0]["text"].endswith("ordered 5 <>")
        fake.rate_limit = 1
        [verdict] = await attempt(plugin, [order])
        assert isinstance(verdict, RetryableError) and verdict.retry_after == 1.0
        fake.archived = True
        [verdict] = await attempt(plugin, [order])
        assert isinstance(verdict, PermanentError) and verdict.reason == "http_410"
        revoked = make_plugin(
            "slack", settings(fake.base_url + "/services/T/B/revoked-token-9"), http=http
        )
        [verdict] = await attempt(revoked, [order])
        assert isinstance(verdict, PermanentError) and verdict.reason == "http_404"
        request = encoded(plugin, [order]).requests[0]
        response = await plugin.send(request)
        assert "slack-token-000000" not in shown(plugin, request, response)
        assert "revoked-token-9" not in revoked.describe_text(verdict.message)
