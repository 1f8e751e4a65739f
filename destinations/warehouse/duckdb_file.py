"""DuckDB: an embedded file database, the warehouse of a laptop (``router run``).

DuckDB lets one process at a time open a file for writing, and while it is open no other
process may read it. So the router opens the file for each load and closes it when the load
commits (a few milliseconds every ``flush_interval``); in between, any process may open it
read-only (``router warehouse query``, the ``duckdb`` Python module). A reader that keeps it
open makes loads fail to lock it: they go to the retry topic and land once it is closed.

A load writes each table's rows to a temporary newline-delimited JSON file (the stage) and
inserts them with ``read_json`` and ``ON CONFLICT``, in one transaction. DuckDB's calls block,
so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import duckdb
import orjson

from destinations.warehouse import sql
from destinations.warehouse.loader import Backend, FailureKind, Transaction
from destinations.warehouse.naming import quote
from destinations.warehouse.schema import ColumnType, TableLoad, TableRef

DUCKDB = sql.Dialect(
    "duckdb",
    {
        ColumnType.TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
        ColumnType.INTEGER: "BIGINT",
        ColumnType.FLOAT: "DOUBLE",
        ColumnType.BOOLEAN: "BOOLEAN",
        ColumnType.TEXT: "VARCHAR",
    },
)

_RETRY = (
    duckdb.IOException,  # the file is locked by a reader, or the disk failed
    duckdb.OutOfMemoryException,
    duckdb.TransactionException,
    duckdb.InterruptException,
)
_ROW = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBTransaction(Transaction):
    def __init__(self, connection: duckdb.DuckDBPyConnection, stage_dir: str, catalog: str) -> None:
        self.connection = connection
        self.stage_dir = stage_dir
        self.catalog = catalog

    async def _run(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self.connection.execute(statement, list(params) or None).fetchall()

        return await asyncio.to_thread(run)

    async def execute(self, statement: str) -> None:
        await self._run(statement)

    async def query(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        def run() -> tuple[list[str], list[tuple[Any, ...]]]:
            cursor = self.connection.execute(statement)
            names = [column[0] for column in cursor.description or ()]
            return names, cursor.fetchall()

        return await asyncio.to_thread(run)

    async def columns(self, schemas: Collection[str]) -> dict[TableRef, dict[str, str]]:
        if not schemas:
            return {}
        rows = await self._run(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE list_contains(?, c.table_schema) AND t.table_type = 'BASE TABLE' "
            "AND c.table_catalog = current_database() "
            "ORDER BY c.table_schema, c.table_name, c.ordinal_position",
            list(schemas),
        )
        found: dict[TableRef, dict[str, str]] = {}
        for schema, table, column, sql_type in rows:
            found.setdefault(TableRef(schema, table), {})[column] = sql_type
        return found

    async def lock_ddl(self) -> None:
        """Nothing to do: the file has one writer at a time."""

    async def write(self, load: TableLoad) -> int:
        names = [name for name, _ in load.columns]

        def stage_and_insert() -> int:
            handle, path = tempfile.mkstemp(suffix=".ndjson", dir=self.stage_dir)
            try:
                with os.fdopen(handle, "wb") as stage:
                    for row in load.rows:
                        stage.write(orjson.dumps(dict(zip(names, row, strict=True))))
                        stage.write(b"\n")
                types = ", ".join(
                    f"{_literal(name)}: {_literal(DUCKDB.type_name(kind))}"
                    for name, kind in load.columns
                )
                source = (
                    f"read_json({_literal(path)}, format = 'newline_delimited', "
                    f"columns = {{{types}}})"
                )
                statement = sql.insert(load, self.qualified(load.table), source)
                result = self.connection.execute(statement).fetchone()
                return int(result[0]) if result else 0
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)

        return await asyncio.to_thread(stage_and_insert)

    async def delete(self, table: TableRef, column: str, value: str) -> int:
        rows = await self._run(
            f"DELETE FROM {self.qualified(table)} WHERE {quote(column)} = ?",  # noqa: S608
            value,
        )
        return int(rows[0][0]) if rows else 0


class DuckDBBackend(Backend):
    dialect = DUCKDB

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only

    def describe(self) -> str:
        return f"duckdb {self.path}"

    async def start(self) -> None:
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        connection = await asyncio.to_thread(
            duckdb.connect, str(self.path), read_only=self.read_only
        )
        try:
            await asyncio.to_thread(connection.execute, "BEGIN TRANSACTION")
            found = await asyncio.to_thread(
                lambda: connection.execute("SELECT current_database()").fetchone()
            )
            catalog = str(found[0]) if found else self.path.stem
            try:
                yield DuckDBTransaction(connection, tempfile.gettempdir(), catalog)
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    await asyncio.to_thread(connection.execute, "ROLLBACK")
                raise
            await asyncio.to_thread(connection.execute, "COMMIT")
        finally:
            await asyncio.to_thread(connection.close)

    def classify(self, exc: BaseException) -> FailureKind | None:
        if isinstance(exc, _RETRY):
            return FailureKind.RETRY
        if isinstance(exc, _ROW):
            return FailureKind.ROW
        if isinstance(exc, duckdb.Error):
            return FailureKind.FATAL
        if isinstance(exc, OSError):
            return FailureKind.RETRY
        return None
