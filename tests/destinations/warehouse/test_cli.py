"""``router warehouse sql|stats|query`` against both backends (the router's own ``main``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from router.broker.embedded import free_port
from router.cli import main
from tests.contract.base import sample_events
from tests.destinations.warehouse.conftest import load, make_plugin, postgres_settings
from tests.destinations.warehouse.test_load import track
from tests.postgres_server import PostgresServer


def workspace_file(directory: Path, settings: dict[str, Any]) -> str:
    document = {
        "processor": {"state_dir": str(directory / "state")},
        "sources": [{"id": "web", "write_keys": ["wk"]}],
        "destinations": [
            {"id": "wh", "name": "Warehouse", "type": "warehouse", "sources": ["web"],
             "settings": settings},
            {"id": "hook", "name": "Hook", "type": "webhook", "sources": ["web"],
             "settings": {"url": "http://127.0.0.1:9/hook"}},
        ],
    }  # fmt: skip
    path = directory / "workspace.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def populate(settings: dict[str, Any], events: list[dict[str, Any]]) -> None:
    async def run() -> None:
        plugin = make_plugin(settings)
        await plugin.start()
        try:
            _, rejected = await load(plugin, events)
            assert rejected == {}
        finally:
            await plugin.stop()

    asyncio.run(run())


def test_stats_print_rows_per_table_and_freshness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {"backend": "duckdb", "path": str(tmp_path / "wh.duckdb")}
    config = workspace_file(tmp_path, settings)
    populate(settings, [*sample_events(), track("o-2"), track("o-3")])
    assert main(["warehouse", "stats", "wh", "--config", config]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["web.order_completed"] == ["3", "2026-11-23T10:00:00.123Z"]
    assert lines["web.users"][0] == "1"
    assert "freshness: newest received_at 2026-11-23T10:00:00.123Z" in out


def test_query_prints_rows_as_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = {"backend": "duckdb", "path": str(tmp_path / "wh.duckdb")}
    config = workspace_file(tmp_path, settings)
    populate(settings, [track("q-1"), track("q-2", "Signed Up")])
    sql = "SELECT event_text, count(*) AS n FROM web.tracks GROUP BY 1 ORDER BY 1"
    assert main(["warehouse", "query", "wh", sql, "-c", config]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out] == [
        ["event_text", "n"],
        ["Order", "Completed", "1"],
        ["Signed", "Up", "1"],
        ["(2", "rows)"],
    ]


def test_sql_prints_ddl_that_recreates_the_tables(
    tmp_path: Path,
    postgres_server: PostgresServer,
    pg_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = postgres_settings(postgres_server, pg_database)
    config = workspace_file(tmp_path, settings)
    populate(settings, sample_events())
    assert main(["warehouse", "sql", "wh", "--config", config]) == 0
    ddl = capsys.readouterr().out
    assert 'CREATE TABLE IF NOT EXISTS "web"."tracks"' in ddl
    assert '"received_at" timestamp with time zone' in ddl

    async def replay_elsewhere() -> set[str]:
        connection = await asyncpg.connect(postgres_server.dsn(pg_database))
        try:
            await connection.execute("CREATE SCHEMA copy")
            await connection.execute(ddl.replace('"web"', '"copy"'))
            rows = await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'copy'"
            )
        finally:
            await connection.close()
        return {row[0] for row in rows}

    assert {"tracks", "order_completed", "users", "discards"} <= asyncio.run(replay_elsewhere())


@pytest.mark.parametrize(
    ("destination", "message"),
    [("nope", "no destination 'nope' (warehouse destinations: wh)"), ("hook", "not a warehouse")],
)
def test_a_destination_that_is_not_a_warehouse_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], destination: str, message: str
) -> None:
    config = workspace_file(tmp_path, {"backend": "duckdb", "path": str(tmp_path / "w.duckdb")})
    assert main(["warehouse", "stats", destination, "--config", config]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_unreachable_postgres_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {
        "backend": "postgres",
        "port": free_port(),
        "database": "analytics",
        "user": "router",
        "password": "never-printed-secret",
        "connect_timeout": "2s",
    }
    assert main(["warehouse", "stats", "wh", "--config", workspace_file(tmp_path, settings)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("router warehouse: postgres router@127.0.0.1:")
    assert len(err.splitlines()) == 1 and "never-printed-secret" not in err
