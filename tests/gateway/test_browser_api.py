"""What the browser library needs before it sends anything: CORS preflight and settings."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from router.config import KafkaSettings
from router.gateway import Gateway
from tests.gateway.conftest import WEB_KEY, Client, make_workspace

ORIGIN = "http://shop.example:8000"


async def test_preflight_allows_what_analytics_next_sends(client: Client) -> None:
    for path in ("/v1/t", "/v1/batch", "/v1/b", "/v1/projects/wk-web/settings"):
        status, _body, headers = await client.request(
            "OPTIONS",
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert status == 204, path
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert int(headers["Access-Control-Max-Age"]) > 0


async def test_preflight_without_requested_headers_still_allows_auth(client: Client) -> None:
    status, _body, headers = await client.request(
        "OPTIONS", "/v1/track", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert status == 204
    allowed = {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


async def test_actual_responses_carry_cors_headers(client: Client) -> None:
    body = {"userId": "u1", "event": "E", "writeKey": WEB_KEY}
    status, _answer, headers = await client.post(
        "/v1/t", body, headers={"Origin": ORIGIN, "Content-Type": "text/plain"}
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_settings_document(client: Client, gateway: Gateway) -> None:
    status, body, headers = await client.request(
        "GET", f"/v1/projects/{WEB_KEY}/settings", headers={"Origin": ORIGIN}
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    segment = body["integrations"]["Segment.io"]
    assert segment == {
        "apiKey": WEB_KEY,
        "apiHost": f"127.0.0.1:{gateway.port}/v1",
        "protocol": "http",
    }
    assert body["metrics"] == {"sampleRate": 0}


async def test_settings_unknown_write_key(client: Client) -> None:
    status, body, _headers = await client.request("GET", "/v1/projects/wk-nobody/settings")
    assert (status, body["code"]) == (404, "unknown_write_key")
    assert body["message"]


async def test_settings_with_public_url(kafka: KafkaSettings) -> None:
    """Behind a proxy the settings name the public address, not the one the proxy reached."""
    public = "https://events.shop.example/segment/"
    async with (
        Gateway(make_workspace(kafka), CollectorRegistry(), port=0, public_url=public) as gateway,
        aiohttp.ClientSession() as session,
    ):
        url = f"http://127.0.0.1:{gateway.port}/v1/projects/{WEB_KEY}/settings"
        async with session.get(url) as resp:
            body: dict[str, Any] = await resp.json()
    assert body["integrations"]["Segment.io"]["apiHost"] == "events.shop.example/segment/v1"
    assert body["integrations"]["Segment.io"]["protocol"] == "https"
