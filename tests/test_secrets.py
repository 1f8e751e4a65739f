"""No secret reaches what people read: logs, dead letters, status records, metrics, the API.

A run with known secrets, all given through ``${ENV}`` as a workspace should: a webhook's
Authorization header, its HMAC secret and a token in its URL path and query, a warehouse
password (wrong, so the load fails with the database's own message), and the console's admin
token; partners that refuse (400), fail until the retry window ends (503) and a warehouse that
refuses the login. Then every place a person reads is searched for every secret.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.config import SECRETS, KafkaSettings
from router.workspace import validate_workspace
from tests.delivery.sink import Sink
from tests.kafka_helpers import consume, produce
from tests.ops.helpers import WRITE_KEY, Api, eventually, running_router, topics, unique_kafka
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.integration

VALUES = {
    "HOOK_TOKEN": "tok-hook-0f9e8d7c6b",
    "HOOK_HMAC": "hmac-key-1a2b3c4d5e",
    "HOOK_PATH": "pathsecret-77aa88bb",
    "HOOK_QUERY": "plainsecret-99cc00dd",
    "PG_PASSWORD": "pg-wrong-password-5566",
    "ADMIN_TOKEN": "admin-token-aabbccddeeff0011",
}


def hook(dest_id: str, base: str) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": dest_id,
        "type": "webhook",
        "sources": ["web"],
        "settings": {
            "url": base + "/services/${HOOK_PATH}?plain=${HOOK_QUERY}",
            "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
            "secret": "${HOOK_HMAC}",
        },
        "delivery": {
            "backoff_min": "50ms",
            "backoff_max": "100ms",
            "retry_window": "1s",
            "timeout": "1s",
        },
    }


async def test_no_secret_in_logs_records_metrics_or_api(
    kafka: KafkaSettings,
    tmp_path: Path,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(SECRETS)  # what the router installs on every log handler
    kafka = unique_kafka(kafka)
    async with Sink() as rejecting, Sink() as failing:
        rejecting.fail(400)
        failing.fail(503)
        base_400 = rejecting.url.rsplit("/", 1)[0]
        base_503 = failing.url.rsplit("/", 1)[0]
        ws = validate_workspace(
            {
                "kafka": kafka.model_dump(exclude_none=True),
                "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms"},
                "ops": {"admin_token": "${ADMIN_TOKEN}"},
                "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
                "destinations": [
                    hook("refuses", base_400),
                    hook("fails", base_503),
                    {
                        "id": "warehouse",
                        "name": "Warehouse",
                        "type": "warehouse",
                        "warehouse": True,
                        "sources": ["web"],
                        "settings": {
                            "backend": "postgres",
                            "host": postgres_server.host,
                            "port": postgres_server.port,
                            "database": "postgres",
                            "user": postgres_server.user,
                            "password": "${PG_PASSWORD}",
                            "sslmode": "disable",
                            "flush_interval": "200ms",
                        },
                    },
                ],
            }
        )
        events = [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": f"user-{i}",
                "messageId": f"secret-run-{i}",
                "properties": {"total": i},
            }
            for i in range(4)
        ]
        async with running_router(ws, tmp_path / "console.sqlite") as (console, _api, port):
            api = Api(_api.session, _api.base, token=VALUES["ADMIN_TOKEN"])
            await produce(
                kafka, topics(kafka).raw, events, headers=[("write-key", WRITE_KEY.encode())]
            )

            async def every_event_dead_lettered() -> Any:
                letters = await asyncio.gather(
                    *(api.get(f"/api/v1/destinations/{d}/dlq") for d in ws_ids(ws))
                )
                return all(body["total"] >= len(events) for body in letters)

            await eventually(every_event_dead_lettered, timeout=60)
            shown: list[str] = []
            for path in (
                "/api/v1/workspace",
                "/api/v1/destinations",
                "/api/v1/sources/web/events",
                "/api/v1/events/secret-run-0",
                *(f"/api/v1/destinations/{d}/delivery" for d in ws_ids(ws)),
                *(f"/api/v1/destinations/{d}/dlq" for d in ws_ids(ws)),
            ):
                shown.append(str(await api.get(path)))
            letters = await api.get("/api/v1/destinations/refuses/dlq")
            first = letters["letters"][0]["id"]
            shown.append(str(await api.get(f"/api/v1/destinations/refuses/dlq/{first}")))
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as response,
            ):
                shown.append(await response.text())
            assert console.folded > 0
        records = []
        for topic in (
            topics(kafka).status,
            *(topics(kafka).dead_letter(d) for d in ws_ids(ws)),
        ):
            records += await consume(kafka, topic, settle=0.5)
    assert any(b"refuses" in r.value for r in records)  # the search covers real records
    # The warehouse refused the login: its dead letters carry the database's own message.
    assert any(b"password authentication failed" in r.value for r in records)
    written = [r.value.decode("utf-8", "replace") for r in records if r.value]
    logs = caplog.text
    # The partner did receive the credentials (they work), so the check is not vacuous.
    assert rejecting.requests and VALUES["HOOK_TOKEN"] in rejecting.requests[0].headers.get(
        "Authorization", ""
    )
    for name, value in VALUES.items():
        for where, text in (("logs", logs), ("records", "\n".join(written)), ("API", str(shown))):
            assert value not in text, f"{name} appears in {where}"


def ws_ids(ws: Any) -> list[str]:
    return [d.id for d in ws.destinations]
