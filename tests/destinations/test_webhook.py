from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from destinations.base import EventBatch, PluginContext
from destinations.http import HttpClient
from destinations.webhook import WebhookDestination, WebhookSettings
from destinations.webhook.encoder import batch_idempotency_key, sign
from router.broker.embedded import free_port
from router.config import Destination
from tests.destinations.local_server import serving

SECRET = "hmac-secret-abcdef"


def plugin(
    settings: dict[str, Any], *, batch_size: int = 1, http: HttpClient | None = None
) -> WebhookDestination:
    destination = Destination.model_validate(
        {
            "id": "hook",
            "name": "Hook",
            "type": "webhook",
            "sources": ["web"],
            "settings": settings,
            "delivery": {"batch_size": batch_size, "timeout": "2s"},
        }
    )
    return WebhookDestination(destination, PluginContext(http=http or HttpClient()))


def events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "E",
            "messageId": f"m-{i}",
            "userId": "u",
            "properties": {"i": i},
        }
        for i in range(n)
    ]


def test_single_event_body_and_headers() -> None:
    hook = plugin(
        {"url": "https://example.com/in", "headers": {"Authorization": "Bearer t-123456"}}
    )
    [event] = events(1)
    request = hook.encode([event])
    assert request.method == "POST"
    assert request.url == "https://example.com/in"
    assert orjson.loads(request.body) == event
    headers = dict(request.headers)
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer t-123456"
    assert headers["Idempotency-Key"] == "m-0"
    assert "X-Signature" not in headers
    assert request.message_ids == ("m-0",)


def test_batch_body_and_idempotency_key() -> None:
    hook = plugin({"url": "https://example.com/in"}, batch_size=3)
    batch = events(3)
    request = hook.encode(batch)
    assert orjson.loads(request.body) == {"batch": batch}
    key = dict(request.headers)["Idempotency-Key"]
    assert key == batch_idempotency_key(["m-0", "m-1", "m-2"])
    assert key.startswith("batch-sha256-")
    # The same batch gets the same key; any other composition gets another one.
    assert hook.encode(batch).headers == request.headers
    assert dict(hook.encode(batch[:2]).headers)["Idempotency-Key"] != key
    assert dict(hook.encode(batch[::-1]).headers)["Idempotency-Key"] != key
    # A batched webhook keeps the batch shape for a single event, so receivers see one format.
    assert orjson.loads(hook.encode(batch[:1]).body) == {"batch": batch[:1]}


def test_unbatched_webhook_refuses_several_events() -> None:
    hook = plugin({"url": "https://example.com/in"})
    with pytest.raises(ValueError):
        hook.encode(events(2))


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    hook = plugin(
        {"url": "https://example.com/in", "secret": SECRET, "signature_header": "X-Hub-Sig"}
    )
    request = hook.encode(events(1))
    header = dict(request.headers)["X-Hub-Sig"]
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"
    assert sign(SECRET.encode(), request.body) == header
    # Any change to the body changes the signature.
    assert sign(SECRET.encode(), request.body + b" ") != header


def test_settings_hold_credentials_as_secrets() -> None:
    settings = WebhookSettings.model_validate(
        {"url": "https://example.com", "secret": SECRET, "headers": {"X-Api-Key": "key-998877"}}
    )
    shown = repr(settings) + settings.model_dump_json()
    assert SECRET not in shown and "key-998877" not in shown


def test_description_masks_credentials_but_keeps_signature() -> None:
    hook = plugin(
        {
            "url": "https://user:pw@example.com/in?token=abc&x=1",
            "secret": SECRET,
            "headers": {"X-Team": "team-77"},
        }
    )
    request = hook.encode(events(1))
    shown = hook.describe_request(request)
    assert shown["headers"]["X-Team"] == "***"
    assert shown["headers"]["X-Signature"].startswith("sha256=")
    assert shown["url"] == "https://***@example.com/in?token=***&x=1"
    assert SECRET not in json.dumps(shown) and "team-77" not in json.dumps(shown)


@pytest.fixture
async def health_server() -> AsyncIterator[str]:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def down(_request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/down", down)
    async with serving(app) as url:
        yield url


async def test_health_checks(health_server: str) -> None:
    async with HttpClient() as http:
        assert (await plugin({"url": f"{health_server}/in"}, http=http).health_check())[0]
        dead = f"http://127.0.0.1:{free_port()}/in"
        ok, detail = await plugin({"url": dead}, http=http).health_check()
        assert not ok and "unreachable" in detail
        ok, _ = await plugin(
            {"url": dead, "health_url": f"{health_server}/ok"}, http=http
        ).health_check()
        assert ok
        ok, detail = await plugin(
            {"url": dead, "health_url": f"{health_server}/down"}, http=http
        ).health_check()
        assert not ok and "503" in detail


@pytest.mark.parametrize("batch_size", [1, 3])
def test_raw_bytes_from_kafka_give_the_same_request(batch_size: int) -> None:
    """The lane hands the events' JSON as read; splicing it equals serializing again."""
    hook = plugin(
        {"url": "https://example.com/in", "secret": "s3cret-value"}, batch_size=batch_size
    )
    events = [
        {"type": "track", "event": "E", "messageId": f"m{i}", "userId": "u", "n": 1.5}
        for i in range(batch_size)
    ]
    raw = [orjson.dumps(e) for e in events]
    assert hook.encode(EventBatch(events, raw)) == hook.encode(events)


def test_urls_from_the_environment_are_masked_in_descriptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Slack-style secret path or an innocently named query parameter, written as ${ENV}:
    nothing a person reads (dead letters, status records) may show them."""
    from router.workspace import validate_workspace

    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/services/T0/B0/pathsecret99")
    monkeypatch.setenv("HOOK_TOKEN", "plainsecret77")
    workspace = validate_workspace(
        {
            "sources": [{"id": "web", "write_keys": ["k-web-1"]}],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": "${HOOK_URL}?plain=${HOOK_TOKEN}"},
                }
            ],
        }
    )
    hook = WebhookDestination(workspace.destinations[0], PluginContext(http=HttpClient()))
    request = hook.encode([{"type": "track", "event": "E", "messageId": "m", "userId": "u"}])
    shown = json.dumps(
        [
            hook.describe_request(request),
            hook.describe_text(f"HTTP 404 from {request.url}"),
        ]
    )
    assert "pathsecret99" not in shown and "plainsecret77" not in shown
    assert "hooks.example.com" not in shown  # the whole value came from the environment
