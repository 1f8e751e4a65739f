"""The console over a running router (processor, agent, console): the debugger with payloads
after middleware and the destinations of each event, the live stream, per-event lookup,
dead letters and redrive from the API, 401 on every API path, secrets never shown."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.kafka_helpers import consume, produce
from tests.ops.helpers import (
    TOKEN,
    WRITE_KEY,
    eventually,
    hook,
    running_console,
    running_router,
    topics,
    unique_kafka,
    workspace,
)

pytestmark = pytest.mark.integration

SECRET_HEADER = "sk_live_very-secret-value-42"
SALT = "pepper"


def sources() -> list[dict[str, Any]]:
    return [
        {
            "id": "web",
            "write_keys": [WRITE_KEY],
            "middleware": [
                {"type": "drop_fields", "fields": ["context.ip"]},
                {"type": "hash_fields", "fields": ["properties.email"], "salt": SALT},
            ],
        }
    ]


def track(index: int, name: str = "Order Completed", **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{index % 5}",
        "messageId": f"e2e-{index}",
        "context": {"ip": "203.0.113.9"},
        "properties": {"email": f"person{index}@example.com", "index": index, **properties},
    }


def refuse_bad(events: list[dict[str, Any]], _sink: Sink) -> tuple[int, dict[str, str]] | None:
    if any(e.get("properties", {}).get("bad") for e in events):
        return 400, {}
    return None


async def test_console_over_a_running_router(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    async with Sink() as good, Sink() as flaky:
        flaky.script = refuse_bad
        ws = workspace(
            kafka,
            tmp_path / "state",
            [
                hook(
                    "good",
                    good.url,
                    settings={"url": good.url, "headers": {"X-Key": SECRET_HEADER}},
                ),
                hook(
                    "flaky",
                    flaky.url,
                    settings={"url": flaky.url, "headers": {"X-Key": SECRET_HEADER}},
                ),
                hook(
                    "orders",
                    good.url,
                    filters=[{"type": "only", "if": 'event = "Order Completed"'}],
                ),
            ],
            sources=sources(),
        )
        raw = topics(kafka).raw
        async with running_router(ws, tmp_path / "console.sqlite") as (_console, api, _):
            events = [track(i) for i in range(6)]
            events.append(track(6, "Signed Up"))
            events.append(track(7, bad=True))
            await produce(kafka, raw, events, headers=[("write-key", WRITE_KEY.encode())])

            # --- the debugger: payload after middleware, routes and outcomes
            async def all_settled() -> Any:
                body = await api.get("/api/v1/sources/web/events", limit=50)
                settled = [
                    e
                    for e in body["events"]
                    if all("outcome" in r or r["state"] != "routed" for r in e["routes"])
                ]
                return body if len(settled) == len(events) else None

            body = await eventually(all_settled, timeout=60)
            by_id = {e["messageId"]: e for e in body["events"]}
            assert set(by_id) == {e["messageId"] for e in events}
            first = by_id["e2e-0"]
            digest = hashlib.sha256((SALT + "person0@example.com").encode()).hexdigest()
            assert first["payload"]["properties"]["email"] == digest
            assert "ip" not in first["payload"].get("context", {})
            assert "person0@example.com" not in orjson.dumps(body).decode()
            routes = {r["destination"]: r for r in first["routes"]}
            assert routes["good"]["outcome"] == "delivered"
            assert routes["orders"]["outcome"] == "delivered"
            signed_up = {r["destination"]: r for r in by_id["e2e-6"]["routes"]}
            assert (signed_up["orders"]["state"], signed_up["orders"]["reason"]) == (
                "filtered",
                "only",
            )
            bad = {r["destination"]: r for r in by_id["e2e-7"]["routes"]}
            assert (bad["flaky"]["outcome"], bad["flaky"]["outcomeReason"]) == ("dlq", "http_400")

            # search by text (after middleware only), event name and type
            found = await api.get("/api/v1/sources/web/events", q="signed")
            assert [e["messageId"] for e in found["events"]] == ["e2e-6"]
            assert (await api.get("/api/v1/sources/web/events", q="person3@example"))[
                "events"
            ] == []
            found = await api.get("/api/v1/sources/web/events", q=digest[:16])
            assert [e["messageId"] for e in found["events"]] == ["e2e-0"]
            found = await api.get("/api/v1/sources/web/events", event="order", limit=3)
            assert len(found["events"]) == 3
            assert all(e["event"] == "Order Completed" for e in found["events"])
            assert (await api.get("/api/v1/sources/web/events", type="identify"))["events"] == []

            # --- live: a new event, then its delivery outcomes
            live = await _live_events(
                api,
                "web",
                lambda: produce(
                    kafka, raw, [track(8, "Live One")], headers=[("write-key", WRITE_KEY.encode())]
                ),
            )
            kinds = [(kind, data.get("messageId")) for kind, data in live]
            assert ("event", "e2e-8") in kinds
            assert ("outcome", "e2e-8") in kinds
            (entry,) = [d for k, d in live if k == "event"]
            assert entry["payload"]["properties"]["email"] != "person8@example.com"

            # --- per-event lookup: every destination
            lookup = await api.get("/api/v1/events/e2e-7")
            states = {d["destination"]: d["state"] for d in lookup["destinations"]}
            assert states == {"good": "delivered", "flaky": "dead_lettered", "orders": "delivered"}
            flaky_entry = next(d for d in lookup["destinations"] if d["destination"] == "flaky")
            letter_id = flaky_entry["deadLetters"][0]["id"]
            assert flaky_entry["deadLetters"][0]["live"] is True
            lookup = await api.get("/api/v1/events/e2e-6")
            states = {d["destination"]: d["state"] for d in lookup["destinations"]}
            assert states["orders"] == "filtered"

            # --- Event Delivery of the failing destination shows request and response.
            # The live stream above ends at e2e-8's first outcome, which may be good's:
            # flaky's own delivery of it can land a moment later.
            async def flaky_view() -> Any:
                view = await api.get("/api/v1/destinations/flaky/delivery", window="15m")
                return view if view["delivered"] >= 8 else None

            view = await eventually(flaky_view)
            assert view["dead_lettered"] == 1
            assert view["delivered"] == 8
            (group,) = view["errors"]
            assert group["reason"] == "http_400"
            sample = group["samples"][0]
            assert sample["response"]["status"] == 400
            assert sample["request"]["method"] == "POST"
            assert sample["event"]["messageId"] == "e2e-7"

            # --- dead letters: list, show, redrive once
            letters = await api.get("/api/v1/destinations/flaky/dlq")
            assert [x["id"] for x in letters["letters"]] == [letter_id]
            shown = await api.get(f"/api/v1/destinations/flaky/dlq/{letter_id}")
            assert shown["letter"]["response"]["status"] == 400
            assert shown["letter"]["event"]["messageId"] == "e2e-7"
            flaky.script = None  # the partner is fixed
            result = await api.post("/api/v1/destinations/flaky/dlq/redrive", {"ids": [letter_id]})
            assert (result["selected"], result["redriven"]) == (1, 1)
            assert (await api.get("/api/v1/destinations/flaky/dlq"))["total"] == 0
            again = await api.post("/api/v1/destinations/flaky/dlq/redrive", {"ids": [letter_id]})
            assert again["redriven"] == 0
            assert again["skipped"][0]["reason"] == "already redriven"

            async def delivered_after_redrive() -> bool:
                found = await api.get("/api/v1/events/e2e-7")
                entry = next(d for d in found["destinations"] if d["destination"] == "flaky")
                return entry["state"] == "delivered" and not entry["deadLetters"][0]["live"]

            await eventually(delivered_after_redrive, timeout=30)
            assert flaky.delivered["e2e-7"] == 1
            redriven = [
                r
                for r in await consume(kafka, topics(kafka).destination("flaky"), settle=0.3)
                if dict(r.headers or ()).get("router-redrive")
            ]
            assert [dict(r.headers)["router-redrive"] for r in redriven] == [letter_id.encode()]

            # --- secrets never shown: not in any answer of the API
            answers = [
                await api.get("/api/v1/workspace"),
                await api.get("/api/v1/destinations/good/delivery", window="15m"),
                await api.get("/api/v1/destinations", window="15m"),
                await api.get("/api/v1/sources/web/events"),
                await api.get("/api/v1/events/e2e-0"),
                shown,
            ]
            answers.append(await api.get("/api/v1/destinations/flaky/delivery", window="15m"))
            text = orjson.dumps(answers).decode()
            assert shown["letter"]["request"]["headers"]["X-Key"] == "***"
            assert SECRET_HEADER not in text
            assert TOKEN not in text
            assert "headers" not in orjson.dumps(answers[0]).decode()


async def _live_events(
    api: Any, source: str, trigger: Any, *, want: int = 2, timeout: float = 30
) -> list[tuple[str, dict[str, Any]]]:
    """Open the live stream, run ``trigger``, collect messages until an event and one of its
    outcomes arrived."""
    got: list[tuple[str, dict[str, Any]]] = []
    async with api.session.get(
        f"{api.base}/api/v1/sources/{source}/live", headers=api.headers
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        await response.content.readuntil(b"\n\n")  # ": connected"
        await trigger()
        async with asyncio.timeout(timeout):
            kind = ""
            async for line in response.content:
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    kind = text[7:]
                elif text.startswith("data: "):
                    got.append((kind, orjson.loads(text[6:])))
                    if {k for k, _ in got} >= {"event", "outcome"} and len(got) >= want:
                        break
    return got


API_PATHS = [
    ("GET", "/api/v1/workspace"),
    ("GET", "/api/v1/destinations"),
    ("GET", "/api/v1/destinations/hook/delivery"),
    ("GET", "/api/v1/destinations/hook/dlq"),
    ("GET", "/api/v1/destinations/hook/dlq/0:0"),
    ("POST", "/api/v1/destinations/hook/dlq/redrive"),
    ("GET", "/api/v1/sources/web/events"),
    ("GET", "/api/v1/sources/web/live"),
    ("GET", "/api/v1/sources/web/violations"),
    ("GET", "/api/v1/sources/web/schema"),
    ("GET", "/api/v1/events/m-1"),
    ("GET", "/api/v1/violations"),
    ("GET", "/api/v1/not-a-path"),
    ("DELETE", "/api/v2/anything"),
]


async def test_every_api_path_needs_the_token(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    ws = workspace(kafka, tmp_path / "state", [hook("hook", "http://127.0.0.1:9/hook")])
    async with running_console(ws, tmp_path / "c.sqlite") as (_, api):
        for method, path in API_PATHS:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-wrong-token"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": TOKEN},
            ):
                status, body = await api.call(method, path, headers=headers)
                assert status == 401, (method, path, headers, status)
                assert body["code"] in ("missing_token", "invalid_token"), body
                assert body["message"]
        status, body = await api.call("GET", "/api/v1/not-a-path", headers=api.headers)
        assert (status, body["code"]) == (404, "not_found")
        status, body = await api.call(
            "GET", "/api/v1/destinations/hook/delivery?window=2m", headers=api.headers
        )
        assert (status, body["code"]) == (400, "invalid_window")
        status, body = await api.call(
            "GET", "/api/v1/destinations/nope/delivery", headers=api.headers
        )
        assert (status, body["code"]) == (404, "unknown_destination")
        async with api.session.get(api.base + "/metrics") as response:
            assert response.status == 200  # open unless ops.protect_metrics
        async with api.session.get(api.base + "/healthz") as response:
            assert response.status == 200
        async with api.session.get(api.base + "/") as response:
            page = await response.text()
            assert response.status == 200
            assert "Admin token" in page
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]


async def test_without_a_token_configured_the_api_is_closed(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    ws = workspace(
        kafka,
        tmp_path / "state",
        [hook("hook", "http://127.0.0.1:9/hook")],
        token=None,
    )
    async with running_console(ws, tmp_path / "c.sqlite") as (_, api):
        status, body = await api.call("GET", "/api/v1/workspace", headers=api.headers)
        assert (status, body["code"]) == (401, "console_disabled")


async def test_protected_metrics(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    ws = workspace(
        kafka, tmp_path / "state", [hook("hook", "http://127.0.0.1:9/h")], protect_metrics=True
    )
    async with running_console(ws, tmp_path / "c.sqlite") as (_, api):
        async with api.session.get(api.base + "/metrics") as response:
            assert response.status == 401
        async with api.session.get(api.base + "/metrics", headers=api.headers) as response:
            assert response.status == 200
            assert "router_ops_dead_letters" in await response.text()
        async with aiohttp.ClientSession() as session, session.get(api.base + "/healthz") as r:
            assert r.status == 200


async def test_source_schema_from_the_processors(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/v1/sources/{id}/schema: what the processors published on sources.schema."""
    from router.ops import console as console_module

    monkeypatch.setattr(console_module, "SCHEMA_REFRESH", 0.0)
    kafka = unique_kafka(kafka)
    ws = workspace(kafka, tmp_path / "state", [hook("hook", "http://127.0.0.1:9/hook")])
    processor_settings = ws.processor.model_copy(update={"schema_interval": 0.3})
    ws = ws.model_copy(update={"processor": processor_settings})
    async with running_router(ws, tmp_path / "c.sqlite") as (_, api, _port):
        empty = await api.get("/api/v1/sources/web/schema")
        assert empty["seen"] is False
        events = [track(i, total=i) for i in range(5)]
        await produce(kafka, topics(kafka).raw, events, headers=[("write-key", WRITE_KEY.encode())])

        async def schema() -> Any:
            body = await api.get("/api/v1/sources/web/schema")
            return body if body["seen"] else None

        body = await eventually(schema)
        assert body["source"] == "web"
        names = orjson.dumps(body["events"]).decode()
        assert "Order Completed" in names and "total" in names
        status, missing = await api.call("GET", "/api/v1/sources/nope/schema", headers=api.headers)
        assert (status, missing["code"]) == (404, "unknown_source")
