"""Deletion end to end: events of two users reach two warehouses (PostgreSQL and DuckDB), two
partners and a webhook that dead-letters them; ``SUPPRESS_WITH_DELETE`` for one user through
the console API; then the regulation worker deletes the user's rows and sends each partner the
deletion request its reference documents (one answers 503 first), the console forgets the
user, ``router dlq`` no longer lists the user's letters, and a replay does not bring the
user's events back."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer

from destinations.base import PluginContext
from destinations.http import HttpClient
from destinations.warehouse import WarehouseDestination
from router import cli
from router.config import KafkaSettings
from router.ops.replay import find_window, replay
from router.privacy.worker import RegulationWorker
from router.workspace import load_workspace
from tests.delivery.sink import Sink
from tests.destinations.warehouse.conftest import postgres_settings
from tests.fakes.amplitude import FakeAmplitude
from tests.fakes.mixpanel import FakeMixpanel
from tests.ops.helpers import WRITE_KEY, eventually, running_router, topics, workspace
from tests.postgres_server import PostgresServer

GONE, KEPT = "user-gone", "user-kept"


def warehouse(dest_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": f"Warehouse {dest_id}",
        "type": "warehouse",
        "warehouse": True,
        "sources": ["web"],
        "settings": {**settings, "batch_rows": 100, "flush_interval": "200ms"},
        "delivery": {"backoff_min": "100ms", "backoff_max": "300ms"},
    }


def destinations(
    tmp_path: Path, pg: dict[str, Any], amplitude: FakeAmplitude, mixpanel: FakeMixpanel, sink: Sink
) -> list[dict[str, Any]]:
    quick = {"backoff_min": "100ms", "backoff_max": "300ms", "timeout": "2s"}
    return [
        warehouse("duck", {"backend": "duckdb", "path": str(tmp_path / "warehouse.duckdb")}),
        warehouse("pg", pg),
        {
            "id": "amp",
            "name": "Amplitude",
            "type": "amplitude",
            "sources": ["web"],
            "settings": {
                "api_key": amplitude.api_key,
                "secret_key": amplitude.secret_key,
                "api_host": amplitude.base_url,
                "privacy_host": amplitude.base_url,
            },
            "delivery": quick,
        },
        {
            "id": "mp",
            "name": "Mixpanel",
            "type": "mixpanel",
            "sources": ["web"],
            "settings": {
                "project_token": mixpanel.token,
                "gdpr_token": mixpanel.gdpr_token,
                "api_host": mixpanel.base_url,
                "privacy_host": mixpanel.base_url,
            },
            "delivery": quick,
        },
        {
            "id": "hook",
            "name": "Hook",
            "type": "webhook",
            "sources": ["web"],
            "settings": {"url": sink.url},
            "delivery": quick,
        },
    ]


async def send(kafka: KafkaSettings, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                topics(kafka).raw,
                orjson.dumps(event),
                key=event["userId"].encode(),
                headers=[("write-key", WRITE_KEY.encode())],
            )
    finally:
        await producer.stop()


def calls_of(user: str, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "identify",
            "userId": user,
            "messageId": f"{tag}-identify-{user}",
            "traits": {"plan": "pro", "email": f"{user}@example.com"},
        },
        {
            "type": "track",
            "event": "Order Completed",
            "userId": user,
            "messageId": f"{tag}-track-{user}",
            "properties": {"total": 10},
        },
    ]


async def user_rows(plugin: WarehouseDestination, user: str) -> dict[str, int]:
    found = {}
    for table, column in (
        ("tracks", "user_id"),
        ("order_completed", "user_id"),
        ("identifies", "user_id"),
        ("users", "id"),
    ):
        try:
            _, rows = await plugin.warehouse.query(
                f"SELECT count(*) FROM web.{table} WHERE {column} = '{user}'"
            )
        except Exception:  # the table does not exist yet
            found[table] = 0
            continue
        found[table] = int(rows[0][0])
    return found


async def test_delete_reaches_every_destination_and_the_console(
    kafka: KafkaSettings,
    tmp_path: Path,
    postgres_server: PostgresServer,
    pg_database: str,
    capsys: Any,
) -> None:
    kafka = kafka.model_copy(update={"client_id": f"t-{uuid.uuid4().hex[:8]}"})
    sink = Sink(mode="status", status=400)  # every event dead-lettered: letters to forget
    async with FakeAmplitude() as amplitude, FakeMixpanel() as mixpanel, sink:
        mixpanel.deletion_failures = [503]  # Mixpanel answers 503 first: failed, then done
        ws = workspace(
            kafka,
            tmp_path / "state",
            destinations(
                tmp_path,
                postgres_settings(postgres_server, pg_database),
                amplitude,
                mixpanel,
                sink,
            ),
        )
        document = ws.model_dump(mode="json", by_alias=True, exclude_none=True)
        document["ops"]["admin_token"] = ws.ops.admin_token.get_secret_value()  # type: ignore[union-attr]
        document["privacy"]["deletion"] = {
            "delay": "0s",
            "backoff_min": "200ms",
            "backoff_max": "500ms",
            "max_attempts": 5,
        }
        config_file = tmp_path / "workspace.yaml"
        config_file.write_text(yaml.safe_dump(document))
        ws = load_workspace(config_file)

        async with (
            running_router(ws, tmp_path / "console.sqlite") as (_console, api, _port),
            RegulationWorker(ws),
        ):
            await send(kafka, calls_of(GONE, "old") + calls_of(KEPT, "old"))

            # Everything landed: rows in both warehouses, both partners, four dead letters.
            plugins = {
                dest: WarehouseDestination(ws.destination_by_id(dest), PluginContext(HttpClient()))
                for dest in ("duck", "pg")
            }
            for plugin in plugins.values():
                await plugin.start()
            one_each = {"tracks": 1, "order_completed": 1, "identifies": 1, "users": 1}

            async def landed() -> bool:
                counts = [await user_rows(p, u) for p in plugins.values() for u in (GONE, KEPT)]
                return all(c == one_each for c in counts)

            async def partners() -> bool:
                return len(amplitude.ingested) == 4 and len(mixpanel.imported) == 2

            await eventually(landed, timeout=60)
            await eventually(partners, timeout=30)

            async def four_letters() -> Any:
                found = await api.get("/api/v1/destinations/hook/dlq")
                return found["total"] == 4 and found

            await eventually(four_letters, timeout=30)

            async def debugger_has_both() -> Any:
                found = await api.get("/api/v1/sources/web/events")
                users = {e["payload"]["userId"] for e in found["events"] if e["payload"]}
                return users == {GONE, KEPT}

            await eventually(debugger_has_both, timeout=30)

            # The regulation, through the console API (Segment's request shape).
            created = await api.post(
                "/api/v1/privacy/regulations",
                {
                    "regulationType": "SUPPRESS_WITH_DELETE",
                    "subjectType": "USER_ID",
                    "subjectIds": [GONE],
                    "reason": "GDPR art. 17 request 42",
                },
            )
            (regulation,) = created["regulations"]
            assert regulation["status"] == "running"
            assert set(regulation["destinations"]) == {"duck", "pg", "amp", "mp", "hook"}

            # The console forgot the user at once: debugger and dead letters.
            events = (await api.get("/api/v1/sources/web/events"))["events"]
            assert {e["payload"]["userId"] for e in events if e["payload"]} == {KEPT}
            letters = (await api.get("/api/v1/destinations/hook/dlq", all="1"))["letters"]
            assert len(letters) == 2
            assert all(KEPT in letter["messageId"] for letter in letters)
            suppressed = await api.get("/api/v1/privacy/suppressions")
            assert [s["userId"] for s in suppressed["suppressions"]] == [GONE]

            async def finished() -> Any:
                found = await api.get(f"/api/v1/privacy/regulations/{regulation['id']}")
                return found["status"] != "running" and found

            done = await eventually(finished, timeout=60)
            states = done["destinations"]
            assert done["status"] == "finished", states
            for dest in ("duck", "pg", "amp"):
                assert (states[dest]["status"], states[dest]["attempts"]) == ("done", 1), dest
            assert states["mp"]["status"] == "done"
            assert [a["outcome"] for a in states["mp"]["history"]] == ["failed", "done"]
            assert states["mp"]["history"][0]["reason"] == "http_503"
            assert states["hook"]["status"] == "not_supported"
            assert "webhook has no deletion API" in states["hook"]["reason"]

            # The warehouses hold nothing of the user any more, and all of the other user.
            for plugin in plugins.values():
                assert await user_rows(plugin, GONE) == dict.fromkeys(
                    ("tracks", "order_completed", "identifies", "users"), 0
                )
                assert set((await user_rows(plugin, KEPT)).values()) == {1}

            # The partners got the requests their references document.
            assert amplitude.problems == [] and mixpanel.problems == []
            assert amplitude.deleted_users == [GONE]
            (amp_call,) = [c for c in amplitude.calls if c.path == "/api/2/deletions/users"]
            assert orjson.loads(amp_call.body) == {"user_ids": [GONE], "ignore_invalid_id": "True"}
            credentials = f"{amplitude.api_key}:{amplitude.secret_key}".encode()
            assert (
                amp_call.headers["Authorization"]
                == "Basic " + base64.b64encode(credentials).decode()
            )
            mp_calls = [c for c in mixpanel.calls if c.path == "/api/app/data-deletions/v3.0/"]
            assert [c.status for c in mp_calls] == [503, 200]
            assert mixpanel.deleted_ids == [GONE]
            assert orjson.loads(mp_calls[-1].body) == {
                "distinct_ids": [GONE],
                "compliance_type": "GDPR",
            }
            assert mp_calls[-1].query == {"token": mixpanel.token}

            # New events of the user stop at the processor; the other user's still flow.
            imported = len(mixpanel.imported)
            await send(kafka, calls_of(GONE, "new") + calls_of(KEPT, "new"))

            async def kept_again() -> bool:
                return (await user_rows(plugins["pg"], KEPT))["tracks"] == 2

            await eventually(kept_again, timeout=30)
            await asyncio.sleep(1.0)
            assert set((await user_rows(plugins["pg"], GONE)).values()) == {0}
            # /import takes the tracks (the identifies go to /engage): the kept user's only.
            assert len(mixpanel.imported) == imported + 1
            assert sorted(e.get("user_id") for e in amplitude.ingested.values()) == [
                *[GONE] * 2,
                *[KEPT] * 4,
            ]

            for plugin in plugins.values():
                await plugin.stop()

        # Command-line tools see the same: the status, and no letter of the user to redrive.
        assert (
            await asyncio.to_thread(
                cli.main, ["privacy", "status", "--config", str(config_file), "--json"]
            )
            == 0
        )
        (listed,) = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert listed["id"] == regulation["id"] and listed["status"] == "finished"
        assert (
            await asyncio.to_thread(
                cli.main, ["dlq", "list", "-d", "hook", "--config", str(config_file), "--json"]
            )
            == 0
        )
        letters = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])["letters"]
        assert {letter["messageId"] for letter in letters} == {
            f"{tag}-{kind}-{KEPT}" for tag in ("old", "new") for kind in ("identify", "track")
        }

        # Even unsuppressed, the user's deleted events never come back through a replay.
        assert (
            await asyncio.to_thread(
                cli.main, ["privacy", "unsuppress", "-u", GONE, "--config", str(config_file)]
            )
            == 0
        )
        window = await find_window(ws, "hook", 0, 2**62)
        result = await replay(ws, window, dry_run=True)
        assert result.not_sent["deleted"] == 2  # written before the deletion
        assert result.not_sent["suppressed"] == 2  # written while the user was suppressed
        assert result.sent == 4  # the other user's
