"""Every kind of bad request gets its documented status and a JSON body with code and message."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from router import spec
from router.broker.embedded import EmbeddedBroker
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.gateway import Gateway
from tests.gateway.conftest import WEB_KEY, Client, basic, make_workspace
from tests.kafka_helpers import consume


@contextlib.asynccontextmanager
async def gateway_client(
    kafka: KafkaSettings, **options: Any
) -> AsyncIterator[tuple[Gateway, Client]]:
    async with (
        Gateway(make_workspace(kafka), CollectorRegistry(), port=0, **options) as gateway,
        aiohttp.ClientSession() as session,
    ):
        yield gateway, Client(session, f"http://127.0.0.1:{gateway.port}")


def assert_error(
    answer: tuple[int, dict[str, Any], dict[str, str]], status: int, code: str
) -> None:
    got_status, body, _headers = answer
    assert (got_status, body.get("code")) == (status, code), body
    assert isinstance(body.get("message"), str) and body["message"]


def track(**fields: Any) -> dict[str, Any]:
    return {"userId": "u1", "event": "Clicked", "writeKey": WEB_KEY, **fields}


@pytest.mark.parametrize(
    "path, body, code",
    [
        ("/v1/track", {"event": "Clicked"}, "missing_identity"),
        ("/v1/track", {"userId": ""}, "missing_identity"),
        ("/v1/track", {"userId": "u1"}, "missing_event"),
        ("/v1/t", {"anonymousId": "a1", "event": ""}, "missing_event"),
        ("/v1/identify", {"traits": {}}, "missing_identity"),
        ("/v1/page", {"name": "Home"}, "missing_identity"),
        ("/v1/screen", {"name": "Feed"}, "missing_identity"),
        ("/v1/group", {"userId": "u1"}, "missing_group_id"),
        ("/v1/alias", {"userId": "u1"}, "missing_previous_id"),
        ("/v1/alias", {"anonymousId": "a1", "previousId": "p1"}, "missing_user_id"),
        ("/v1/track", {"userId": "u1", "event": "x" * 256}, "name_too_long"),
        (
            "/v1/track",
            {"userId": "u1", "event": "E", "messageId": "m" * 101},
            "message_id_too_long",
        ),
        ("/v1/track", {"userId": "u1", "event": "E", "properties": []}, "invalid_field"),
        (
            "/v1/track",
            {"userId": "u1", "event": "E", "timestamp": "yesterday"},
            "invalid_timestamp",
        ),
        ("/v1/batch", {"batch": [{"userId": "u1", "event": "E"}]}, "missing_type"),
        ("/v1/batch", {"batch": [{"type": "login", "userId": "u1"}]}, "invalid_type"),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u1"}]}, "missing_event"),
        ("/v1/batch", {"batch": "nope"}, "invalid_batch"),
        ("/v1/batch", {"events": []}, "invalid_batch"),
        ("/v1/batch", {"batch": [], "context": "x"}, "invalid_batch"),
    ],
)
async def test_missing_and_invalid_fields(
    client: Client, path: str, body: dict[str, Any], code: str
) -> None:
    assert_error(await client.post(path, {**body, "writeKey": WEB_KEY}), 400, code)


async def test_invalid_json_and_bodies(client: Client) -> None:
    headers = basic(WEB_KEY)
    assert_error(
        await client.post("/v1/track", data=b"{nope", headers=headers), 400, "invalid_json"
    )
    assert_error(await client.post("/v1/batch", data=b"", headers=headers), 400, "invalid_json")
    assert_error(
        await client.post("/v1/batch", data=b"[1, 2]", headers=headers), 400, "invalid_body"
    )
    assert_error(await client.post("/v1/track", data=b'"x"', headers=headers), 400, "invalid_body")


async def test_size_limits(client: Client, kafka: KafkaSettings, topics: Topics) -> None:
    blob = "x" * spec.MAX_EVENT_BYTES
    assert_error(
        await client.post("/v1/track", track(properties={"blob": blob})), 400, "event_too_large"
    )
    # Just under the limit as sent, over it once stamped: accepted (32 KB is as sent).
    near = "x" * (spec.MAX_EVENT_BYTES - 120)
    status, answer, _ = await client.post("/v1/track", track(properties={"b": near}))
    assert (status, answer) == (200, {"success": True})
    one_big = {"writeKey": WEB_KEY, "batch": [{"type": "track", **track(properties={"b": blob})}]}
    assert_error(await client.post("/v1/batch", one_big), 400, "event_too_large")

    item = {"type": "track", "userId": "u1", "event": "E", "properties": {"b": "y" * 1000}}
    over = {"writeKey": WEB_KEY, "batch": [item] * 520}  # ~540 KB
    assert len(orjson.dumps(over)) > spec.MAX_BATCH_BYTES
    assert_error(await client.post("/v1/batch", over), 400, "batch_too_large")
    # Same body gzipped: small on the wire, still over once inflated.
    zipped = gzip.compress(orjson.dumps(over))
    answer = await client.post("/v1/batch", data=zipped, headers={"Content-Encoding": "gzip"})
    assert_error(answer, 400, "batch_too_large")
    # A gzip bomb is cut off at the limit rather than inflated.
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]")
    answer = await client.post("/v1/batch", data=bomb, headers={"Content-Encoding": "gzip"})
    assert_error(answer, 400, "batch_too_large")

    small = {"type": "track", "userId": "u1", "event": "E"}
    many = {"writeKey": WEB_KEY, "batch": [small] * (spec.MAX_BATCH_EVENTS + 1)}
    assert_error(await client.post("/v1/batch", many), 400, "too_many_events")
    exactly = {"writeKey": WEB_KEY, "batch": [small] * spec.MAX_BATCH_EVENTS}
    assert (await client.post("/v1/batch", exactly))[0] == 200
    # The batch, plus the event accepted just under the limit above.
    written = await consume(kafka, topics.raw, expect=spec.MAX_BATCH_EVENTS + 1, settle=0.3)
    assert len(written) == spec.MAX_BATCH_EVENTS + 1


async def test_write_keys(client: Client) -> None:
    body = {"userId": "u1", "event": "E"}
    assert_error(await client.post("/v1/track", body), 401, "missing_write_key")
    assert_error(await client.post("/v1/batch", {"batch": []}), 401, "missing_write_key")
    assert_error(
        await client.post("/v1/track", body, headers=basic("wk-nobody")), 401, "invalid_write_key"
    )
    answer = await client.post("/v1/track", body, headers={"X-Write-Key": "wk-nobody"})
    assert_error(answer, 401, "invalid_write_key")
    assert_error(
        await client.post("/v1/track", {**body, "writeKey": "nobody"}), 401, "invalid_write_key"
    )
    assert_error(await client.post("/v1/track", {**body, "writeKey": 42}), 401, "invalid_write_key")
    answer = await client.post("/v1/track", body, headers={"Authorization": "Basic %%%"})
    assert_error(answer, 401, "invalid_authorization")


async def test_methods_and_paths(client: Client) -> None:
    answer = await client.request("GET", "/v1/track")
    assert_error(answer, 405, "method_not_allowed")
    assert "POST" in answer[2]["Allow"]
    assert_error(await client.request("PUT", "/v1/batch"), 405, "method_not_allowed")
    assert_error(await client.request("POST", "/v1/projects/x/settings"), 405, "method_not_allowed")
    assert_error(await client.request("GET", "/v2/track"), 404, "not_found")
    assert_error(await client.post("/v1/tracks", track()), 404, "not_found")


async def test_encodings(client: Client) -> None:
    headers = {"Content-Encoding": "gzip", **basic(WEB_KEY)}
    garbage = await client.post("/v1/track", data=b"\x1f\x8bnot gzip at all", headers=headers)
    assert_error(garbage, 400, "invalid_gzip")
    truncated = gzip.compress(orjson.dumps(track()))[:-12]
    assert_error(
        await client.post("/v1/track", data=truncated, headers=headers), 400, "invalid_gzip"
    )
    headers["Content-Encoding"] = "br"
    assert_error(
        await client.post("/v1/track", data=b"x", headers=headers), 415, "unsupported_encoding"
    )


async def test_rate_limit(kafka: KafkaSettings) -> None:
    async with gateway_client(kafka, rate_limit=2, burst=3) as (_gateway, client):
        for _ in range(3):
            assert (await client.post("/v1/track", track()))[0] == 200
        status, body, headers = await client.post("/v1/track", track())
        assert_error((status, body, headers), 429, "rate_limited")
        assert int(headers["Retry-After"]) >= 1
        assert headers["X-RateLimit-Reset"] == headers["Retry-After"]
        # Per write key: another source is not held back by this one.
        other = {"userId": "u1", "event": "E"}
        assert (await client.post("/v1/track", other, headers=basic("wk-server")))[0] == 200

        # A batch larger than the burst passes when the bucket is full, then others wait.
        await asyncio.sleep(1.6)
        batch = {"writeKey": WEB_KEY, "batch": [{"type": "track", **track()}] * 5}
        assert (await client.post("/v1/batch", batch))[0] == 200
        assert_error(await client.post("/v1/batch", batch), 429, "rate_limited")


async def test_body_read_timeout_and_slow_headers(kafka: KafkaSettings) -> None:
    """A client that stalls mid-body gets 408; one that never finishes its headers is cut off."""
    async with gateway_client(kafka, read_timeout=0.5, keepalive_timeout=0.5) as (gateway, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n"
            + b"\r\n".join(f"{k}: {v}".encode() for k, v in basic(WEB_KEY).items())
            + b'\r\n\r\n{"userId": '
        )
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(4096)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert orjson.loads(body)["code"] == "request_timeout"

        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"POST /v1/track HTTP/1.1\r\nHost: ")
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read(4096) == b""  # closed by the server
        writer.close()


@pytest.mark.integration
async def test_kafka_down_answers_503(tmp_path: Any) -> None:
    """Never 200 without an ack: a dead broker makes requests fail with 503 (retried)."""
    async with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=1)
        async with gateway_client(kafka, produce_timeout=1.0, drain_timeout=2.0) as (
            gateway,
            client,
        ):
            assert (await client.post("/v1/track", track()))[0] == 200
            # Killed, not stopped: a broker that vanishes, and no wait for a clean exit.
            assert broker._process is not None
            broker._process.kill()
            await asyncio.to_thread(broker._process.wait, 5)
            status, body, _ = await client.post("/v1/track", track())
            assert (status, body["code"]) in {(503, "kafka_timeout"), (503, "kafka_unavailable")}
            assert body["message"]
            batch = {"writeKey": WEB_KEY, "batch": [{"type": "track", **track()}] * 3}
            assert (await client.post("/v1/batch", batch))[0] == 503
            ok, detail = gateway.health()
            assert ok and "failed" in detail


async def test_stopped_writer_answers_503(gateway: Gateway, client: Client) -> None:
    assert gateway._accumulator is not None
    await gateway._accumulator.stop()
    assert_error(await client.post("/v1/track", track()), 503, "shutting_down")
    assert gateway.health()[0] is False


async def test_errors_carry_cors_headers(client: Client) -> None:
    status, body, headers = await client.post(
        "/v1/t", {"event": "E"}, headers={"Origin": "https://shop.example", **basic(WEB_KEY)}
    )
    assert (status, body["code"]) == (400, "missing_identity")
    assert headers["Access-Control-Allow-Origin"] == "https://shop.example"


async def test_a_frozen_broker_is_answered_within_the_produce_timeout() -> None:
    """A broker that stops answering (SIGSTOP: connections open, nothing acknowledged)."""
    timeout = 1.0
    async with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=1)
        async with gateway_client(kafka, produce_timeout=timeout, drain_timeout=1.0) as (_, client):
            assert (await client.post("/v1/track", track()))[0] == 200
            assert broker._process is not None
            pid = broker._process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                item = {"type": "track", "userId": "u1", "event": "E", "properties": {"n": 1}}
                batch = {"writeKey": WEB_KEY, "batch": [item] * 1000}

                async def timed(path: str, body: Any) -> tuple[int, str, float]:
                    started = time.monotonic()
                    status, answer, _ = await client.post(path, body)
                    return status, answer.get("code", ""), time.monotonic() - started

                answers = await asyncio.gather(
                    *(timed("/v1/batch", batch) for _ in range(4)),
                    *(timed("/v1/track", track()) for _ in range(8)),
                )
            finally:
                os.kill(pid, signal.SIGCONT)
    # The producer's own request timeout may fire first (kafka_unavailable): 503 either way.
    assert {(status, code) for status, code, _ in answers} <= {
        (503, "kafka_timeout"),
        (503, "kafka_unavailable"),
    }
    # The bound, with room for a loaded machine.
    assert max(took for _, _, took in answers) < timeout + 1.0, answers
