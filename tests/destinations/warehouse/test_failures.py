"""What a load does when something goes wrong: retry, dead-letter the batch, or only the row."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from destinations.base import EncodeError, EventBatch, PermanentError, RetryableError
from destinations.warehouse import WarehouseDestination
from router.broker.embedded import free_port
from tests.destinations.warehouse.conftest import load, make_plugin, postgres_settings, select
from tests.destinations.warehouse.test_load import track
from tests.postgres_server import PostgresServer


async def test_a_row_the_database_refuses_fails_only_its_event(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    plugin = make_plugin(postgres_settings(postgres_server, pg_database))
    await plugin.start()
    try:
        batch = [track(f"ok-{i}", note="fine") for i in range(7)]
        batch.insert(3, track("nul", note="PostgreSQL text cannot hold \x00"))
        result, rejected = await load(plugin, batch)
        assert list(rejected) == [3]
        error = rejected[3]
        assert isinstance(error, PermanentError) and not error.retriable
        assert error.reason == "row_rejected"
        assert "0x00" in error.message  # the database's own words, for a person to act on
        assert result.transactions > 1  # the batch was split to find it
        ids = await select(plugin, "SELECT id FROM web.order_completed ORDER BY id")
        assert ids == [(f"ok-{i}",) for i in range(7)]
    finally:
        await plugin.stop()


async def test_bad_credentials_dead_letter_the_batch_with_the_error_not_the_password(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    settings = postgres_settings(postgres_server, pg_database, password="wrong-password-4242")
    plugin = make_plugin(settings)
    await plugin.start()
    try:
        request = plugin.encode([track("c-1")]).requests[0]
        with pytest.raises(PermanentError) as caught:
            await plugin.send(request)
        assert caught.value.reason == "warehouse_error"
        assert "password authentication failed" in caught.value.message
        shown = plugin.describe_text(caught.value.message) + repr(plugin.describe_request(request))
        assert "wrong-password-4242" not in shown
        healthy, detail = await plugin.health_check()
        assert not healthy and "password authentication failed" in detail
    finally:
        await plugin.stop()


async def test_missing_privileges_dead_letter_the_batch(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    admin = await asyncpg.connect(postgres_server.dsn(pg_database))
    try:
        await admin.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pass-123'")
    except asyncpg.DuplicateObjectError:
        pass
    finally:
        await admin.close()
    settings = postgres_settings(
        postgres_server, pg_database, user="reader", password="reader-pass-123"
    )
    plugin = make_plugin(settings)
    await plugin.start()
    try:
        with pytest.raises(PermanentError) as caught:
            await plugin.send(plugin.encode([track("p-1")]).requests[0])
        assert "permission denied" in caught.value.message
    finally:
        await plugin.stop()


async def test_an_unreachable_warehouse_is_retried(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "backend": "postgres",
        "port": free_port(),  # nothing listens there
        "database": "warehouse",
        "user": "router",
        "connect_timeout": "2s",
    }
    plugin = make_plugin(settings)
    await plugin.start()  # starting never needs the warehouse
    try:
        with pytest.raises(RetryableError) as caught:
            await plugin.send(plugin.encode([track("u-1")]).requests[0])
        assert caught.value.reason == "warehouse_unavailable"
        healthy, _ = await plugin.health_check()
        assert not healthy
    finally:
        await plugin.stop()


async def test_a_column_that_cannot_be_created_fails_only_the_events_needing_it(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    plugin = make_plugin(postgres_settings(postgres_server, pg_database))
    await plugin.start()
    try:
        await load(plugin, [track("w-1", total=1)])
        # Fill the event's table up to PostgreSQL's limit of 1,600 columns.
        admin = await asyncpg.connect(postgres_server.dsn(pg_database))
        try:
            have = await admin.fetchval(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_schema = 'web' AND table_name = 'order_completed'"
            )
            filler = ", ".join(f"ADD COLUMN filler_{i} boolean" for i in range(1600 - have))
            await admin.execute(f"ALTER TABLE web.order_completed {filler}")
        finally:
            await admin.close()
        batch = [track("w-2", total=2), track("w-3", brand_new="x"), track("w-4", total=4)]
        result, rejected = await load(plugin, batch)
        assert list(rejected) == [1]
        assert "at most 1600 columns" in rejected[1].message
        assert await select(plugin, "SELECT id FROM web.order_completed ORDER BY id") == [
            ("w-1",),
            ("w-2",),
            ("w-4",),
        ]
        assert result.rows["web.tracks"] == 2
    finally:
        await plugin.stop()


async def test_a_reader_holding_the_duckdb_file_makes_loads_retry(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    plugin = make_plugin({"backend": "duckdb", "path": str(path)})
    await plugin.start()
    await load(plugin, [track("h-1")])
    # Another process opens the file read-only and keeps it open.
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
        "print('open', flush=True); sys.stdin.read()",
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert reader.stdout is not None
        line = await asyncio.wait_for(reader.stdout.readline(), 30)
        assert line.strip() == b"open"
        with pytest.raises(RetryableError) as caught:
            await plugin.send(plugin.encode([track("h-2")]).requests[0])
        assert "lock" in caught.value.message
    finally:
        await asyncio.wait_for(reader.communicate(b""), 30)
    result, rejected = await load(plugin, [track("h-2")])  # the retry, once the reader is gone
    assert rejected == {} and result.rows["web.tracks"] == 1
    await plugin.stop()


def test_events_without_a_message_id_or_type_fail_alone() -> None:
    plugin: WarehouseDestination = make_plugin({"backend": "duckdb", "path": "/nonexistent/x"})
    no_id = track("")
    unknown = {**track("k-2"), "type": "unknown"}
    encoded = plugin.encode([track("k-1"), no_id, unknown])
    assert sorted(encoded.failed) == [1, 2]
    assert all(isinstance(e, EncodeError) for e in encoded.failed.values())
    assert "messageId" in encoded.failed[1].message
    [request] = encoded.requests
    assert request.covers == (0,) and request.message_ids == ("k-1",)


async def test_each_source_gets_its_own_schema(tmp_path: Path) -> None:
    # Segment: one schema per source. The lane hands the plugin each event's source.
    plugin = make_plugin(
        {"backend": "duckdb", "path": str(tmp_path / "w.duckdb")}, sources=("web", "iOS App")
    )
    assert plugin.schemas == ["i_os_app", "web"]
    await plugin.start()
    try:
        events = [track("src-1"), track("src-2"), track("src-3")]
        batch = EventBatch(events, [b""] * 3, ["web", "iOS App", None])  # None: first source
        encoded = plugin.encode(batch)
        [request] = encoded.requests
        result = await plugin.send(request)
        assert result.rows["web.tracks"] == 2 and result.rows["i_os_app.tracks"] == 1
        stats = {str(s.table): s.rows for s in await plugin.warehouse.stats(plugin.schemas)}
        assert stats["i_os_app.order_completed"] == 1 and stats["web.order_completed"] == 2
    finally:
        await plugin.stop()
    shared = make_plugin({"backend": "duckdb", "schema": "allApps"}, sources=("web", "ios"))
    assert shared.schemas == ["all_apps"] and shared.schema_for("ios") == "all_apps"
