"""PostgreSQL through asyncpg: binary COPY, through a staging table when rows may exist.

Why asyncpg: its COPY encodes Python values in PostgreSQL's binary format in compiled code
(``copy_records_to_table``), the fastest way to move rows from Python into PostgreSQL, and it
is asyncio-native like the rest of the router, pool included.

A load is one transaction. Each table's rows are COPYed in: straight into the table while
they are all new (the usual case; a batch that repeats a stored id fails the key and is
loaded again in a new transaction, staged), else into a staging ``TEMP`` table and inserted
from there with ``ON CONFLICT`` (see
:func:`destinations.warehouse.sql.insert`): insert-if-absent for event tables, so a replayed
batch adds nothing, an upsert for ``users`` and ``accounts`` (always staged).

Errors are classified by SQLSTATE class (PostgreSQL's error codes appendix): connection
(08), resources (53), operator intervention (57), system (58), transaction rollback
(serialization failures and deadlocks, 40), lock not available (55P03) and object missing
meanwhile (42P01, 42703: a person dropped a table during the load) are retried; invalid
authorization (28), an unknown database (3D), missing privileges (42501) and syntax errors
(42601) are fatal; data exceptions (22), integrity (23), program limits (54, e.g. 1,600
columns) and type mismatches with a column a person changed (42804, 42846) are row
problems, isolated by splitting the batch.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Collection
from typing import Any

import asyncpg

from destinations.warehouse import sql
from destinations.warehouse.loader import Backend, FailureKind, RowsExist, Transaction
from destinations.warehouse.naming import quote
from destinations.warehouse.schema import ColumnType, TableLoad, TableRef

POSTGRES = sql.Dialect(
    "postgres",
    {
        ColumnType.TIMESTAMP: "timestamp with time zone",
        ColumnType.INTEGER: "bigint",
        ColumnType.FLOAT: "double precision",
        ColumnType.BOOLEAN: "boolean",
        ColumnType.TEXT: "text",
    },
)

_RETRY_CLASSES = ("08", "40", "53", "57", "58")
_RETRY_STATES = frozenset({"55P03", "55006", "42P01", "42703"})
_FATAL_CLASSES = ("28", "3D", "3F", "0A", "0L", "0P")
_FATAL_STATES = frozenset({"42501", "42601", "42P10"})
_ROW_CLASSES = ("22", "23", "54")
_ROW_STATES = frozenset({"42804", "42846"})
#: Serializes DDL across every router writing to this database (pg_advisory_xact_lock key).
DDL_LOCK_KEY = 0x5E6E_2A7E


class PostgresTransaction(Transaction):
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        #: The SQL types of the tables :meth:`columns` last read.
        self._types: dict[TableRef, dict[str, str]] = {}

    async def execute(self, statement: str) -> None:
        await self.connection.execute(statement)

    async def query(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        statement_object = await self.connection.prepare(statement)
        names = [attribute.name for attribute in statement_object.get_attributes()]
        records = await statement_object.fetch()
        return names, [tuple(record) for record in records]

    async def columns(self, schemas: Collection[str]) -> dict[TableRef, dict[str, str]]:
        records = await self.connection.fetch(
            """
            SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_catalog.pg_attribute a
            JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY n.nspname, c.relname, a.attnum
            """,
            list(schemas),
        )
        found: dict[TableRef, dict[str, str]] = {}
        for schema, table, column, sql_type in records:
            found.setdefault(TableRef(schema, table), {})[column] = sql_type
        self._types.update(found)
        return found

    async def lock_ddl(self) -> None:
        await self.connection.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK_KEY)

    async def write(self, load: TableLoad) -> int:
        names = [name for name, _ in load.columns]
        if self.direct and not load.upsert and self._canonical(load):
            # Most batches hold only new events: COPY them straight into the table. One that
            # repeats an id (a replay, the retry of a batch that did commit) breaks the key
            # there; the whole batch is then loaded again, staged and inserted-if-absent.
            try:
                await self.connection.copy_records_to_table(
                    load.table.name, schema_name=load.table.schema, records=load.rows,
                    columns=names,
                )  # fmt: skip
            except asyncpg.UniqueViolationError as exc:
                raise RowsExist(str(exc)) from exc
            return len(load.rows)
        stage = await self._stage(load)
        await self.connection.copy_records_to_table(stage, records=load.rows, columns=names)
        status: str = await self.connection.execute(
            sql.insert(load, self.qualified(load.table), stage)
        )
        return int(status.rsplit(" ", 1)[-1])

    def _canonical(self, load: TableLoad) -> bool:
        """The table's columns have our own types (COPY encodes values for the table's)."""
        types = self._types.get(load.table, {})
        return all(types.get(name) == POSTGRES.type_name(kind) for name, kind in load.columns)

    async def _stage(self, load: TableLoad) -> str:
        """A temporary table for ``load``'s rows, emptied at every commit.

        One per table and column set, kept by the connection (creating a table per load
        costs more than the load's COPY); the database converts staged values to the
        table's own column types when they are inserted.
        """
        signature = repr((load.table, load.columns)).encode()
        stage = f"_router_stage_{hashlib.sha1(signature, usedforsecurity=False).hexdigest()[:20]}"
        definitions = ", ".join(
            f"{quote(name)} {POSTGRES.type_name(kind)}" for name, kind in load.columns
        )
        await self.connection.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({definitions}) ON COMMIT DELETE ROWS"
        )
        return stage

    async def delete(self, table: TableRef, column: str, value: str) -> int:
        status: str = await self.connection.execute(
            f"DELETE FROM {self.qualified(table)} WHERE {quote(column)} = $1",  # noqa: S608
            value,
        )
        return int(status.rsplit(" ", 1)[-1])


class PostgresBackend(Backend):
    dialect = POSTGRES
    #: One load per pooled connection: while the database works on one batch (COPY into
    #: keyed tables, the upsert), Python sends the next.
    parallel_loads = 2

    def __init__(
        self,
        *,
        host: str,
        port: int,
        database: str,
        user: str,
        password: str | None,
        sslmode: str,
        connect_timeout: float,
        read_only: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self._password = password
        self.sslmode = sslmode
        self.connect_timeout = connect_timeout
        self.read_only = read_only
        self._pool: Any = None

    def describe(self) -> str:
        return f"postgres {self.user}@{self.host}:{self.port}/{self.database}"

    async def start(self) -> None:
        if self._pool is None:
            # No connection yet: a warehouse that is down must not stop the agent starting;
            # the first load connects (and is retried until it can).
            self._pool = await asyncpg.create_pool(
                host=self.host,
                port=self.port,
                database=self.database,
                user=self.user,
                password=self._password,
                ssl=self.sslmode,
                timeout=self.connect_timeout,
                min_size=0,
                max_size=self.parallel_loads,
                # Statements built per batch (DDL, inserts) run without arguments, so over
                # the simple protocol and never into this cache (a cached plan of a table
                # altered since fails inside a transaction); what is cached is fixed text.
                server_settings={"application_name": "event-router warehouse"},
            )

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        if self._pool is None:
            await self.start()
        async with (
            self._pool.acquire() as connection,
            connection.transaction(readonly=self.read_only),
        ):
            yield PostgresTransaction(connection)

    def classify(self, exc: BaseException) -> FailureKind | None:
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and isinstance(exc, asyncpg.PostgresError):
            if state in _RETRY_STATES or state.startswith(_RETRY_CLASSES):
                return FailureKind.RETRY
            if state in _FATAL_STATES or state.startswith(_FATAL_CLASSES):
                return FailureKind.FATAL
            if state in _ROW_STATES or state.startswith(_ROW_CLASSES):
                return FailureKind.ROW
            return FailureKind.FATAL
        if isinstance(exc, asyncpg.DataError):
            # A value the driver cannot encode for its column (a column a person changed).
            return FailureKind.ROW
        if isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError):
            # Connection lost, refused or too slow to answer.
            return FailureKind.RETRY
        return None
