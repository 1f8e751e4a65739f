"""Warehouse tests run against both backends: a real PostgreSQL server and a DuckDB file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from destinations.base import DestinationError, PluginContext
from destinations.http import HttpClient
from destinations.warehouse import LoadResult, WarehouseDestination
from router.config import Destination
from tests.postgres_server import PostgresServer


async def create_database(server: PostgresServer) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(server: PostgresServer, name: str) -> None:
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def postgres_settings(server: PostgresServer, database: str, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "postgres",
        "host": server.host,
        "port": server.port,
        "database": database,
        "user": server.user,
        "password": server.password,
        "sslmode": "disable",
        **extra,
    }


@pytest.fixture
async def pg_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = await create_database(postgres_server)
    yield name
    await drop_database(postgres_server, name)


@pytest.fixture(params=["duckdb", "postgres"])
async def backend_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """Settings of a fresh, empty warehouse: a DuckDB file, or a new PostgreSQL database."""
    if request.param == "duckdb":
        yield {"backend": "duckdb", "path": str(tmp_path / "warehouse.duckdb")}
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = await create_database(server)
    yield postgres_settings(server, name)
    await drop_database(server, name)


def make_plugin(
    settings: dict[str, Any],
    *,
    dest_id: str = "wh",
    sources: Sequence[str] = ("web",),
    registry: CollectorRegistry | None = None,
    state_dir: Path | None = None,
) -> WarehouseDestination:
    destination = Destination.model_validate(
        {
            "id": dest_id,
            "name": "Warehouse",
            "type": "warehouse",
            "warehouse": True,
            "sources": list(sources),
            "settings": settings,
        }
    )
    context = PluginContext(
        http=HttpClient(),
        state_dir=state_dir or Path("./state"),
        registry=registry if registry is not None else CollectorRegistry(),
    )
    return WarehouseDestination(destination, context)


@pytest.fixture
async def warehouse(backend_settings: dict[str, Any]) -> AsyncIterator[WarehouseDestination]:
    plugin = make_plugin(backend_settings)
    await plugin.start()
    yield plugin
    await plugin.stop()


async def load(
    plugin: WarehouseDestination, events: Sequence[dict[str, Any]]
) -> tuple[LoadResult, dict[int, DestinationError]]:
    """One attempt as the delivery lane runs it: encode, send, check."""
    encoded = plugin.encode(events)
    assert not encoded.failed, dict(encoded.failed)
    [request] = encoded.requests
    result = await plugin.send(request)
    return result, dict(plugin.check(request, result))


async def select(plugin: WarehouseDestination, statement: str) -> list[tuple[Any, ...]]:
    _, rows = await plugin.warehouse.query(statement)
    return rows


async def column_kinds(plugin: WarehouseDestination, table: str) -> dict[str, str]:
    """``column -> kind`` (timestamp, integer, float, boolean, text) of ``<schema>.<table>``."""
    from destinations.warehouse.schema import TableRef
    from destinations.warehouse.sql import kind_of

    tables = await plugin.warehouse.describe_tables([plugin.default_schema])
    found = tables.get(TableRef(plugin.default_schema, table))
    assert found is not None, (
        f"no table {plugin.default_schema}.{table} in {sorted(map(str, tables))}"
    )
    return {name: str(kind_of(sql_type)) for name, sql_type in found.items()}
