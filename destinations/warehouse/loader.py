"""Loading batches: one transaction per batch, the schema evolved inside it, bad rows isolated.

A load, in one transaction: read the current columns of the schemas the batch writes to;
create what is missing (schemas, tables, columns: ``IF NOT EXISTS``, under a lock so two
writers never race on DDL) and read the columns again (another writer may have created one
first, with its own type: the database is the truth); cast every value to its column's type;
stage each table's rows (COPY) and insert them (insert-if-absent on ``id``; upsert for
``users`` and ``accounts``).

Failures are sorted by what another attempt could change (:class:`FailureKind`): the
warehouse unreachable, a lock or a deadlock -> the whole batch is retried through the retry
topic (:class:`RetryableError`); credentials refused, permissions missing -> the batch is
dead-lettered with the database's message (:class:`PermanentError`); anything that a row
could cause (a value the database refuses, a column it cannot add) -> the batch is split in
halves, each loaded in its own transaction, until the events that cannot be stored are
found; only those are dead-lettered, with the database's message, and the rest lands.

Loads of one destination come while others run (the lane keeps two in flight). Up to
``Backend.parallel_loads`` run at once, each in its own transaction (PostgreSQL: two, one per
pooled connection, so the database works on one batch while Python sends the other; a
DuckDB file: one). A batch is turned into typed rows (:mod:`.shapes`) before it waits for
its turn, a slice of events at a time with the event loop let run in between, so the
running transactions' statements go on meanwhile. On one Python thread this is what lets
the database and the casting work at the same time. Loads running together touch the same
ids only when events repeat (a replay): a key one writes waits for the other to commit,
then the staged insert skips it; state rows are upserted in ``id`` order, so two loads of
the same users never wait on each other in a circle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from destinations.base import PermanentError, RetryableError
from destinations.warehouse import sql
from destinations.warehouse.schema import (
    DISCARDS,
    Event,
    Evolution,
    Loads,
    SchemaState,
    TableLoad,
    TableRef,
    deletion_targets,
    evolve,
    key_of,
    rows_for,
)
from destinations.warehouse.shapes import Materializer, materialize

if TYPE_CHECKING:
    from router.observability.warehouse import WarehouseMetrics

logger = logging.getLogger(__name__)

#: Most transactions one batch may take while isolating the rows that cannot be stored:
#: one bad row in 5,000 takes about 26; past the bound, the events not yet isolated are
#: dead-lettered together with the error their group got.
MAX_TRANSACTIONS = 128
#: Characters of a database message kept in an error (they can quote a whole value).
MESSAGE_LIMIT = 1000
#: Events turned into rows between two turns of the event loop (a few milliseconds of work).
SLICE = 500


class FailureKind(Enum):
    RETRY = "retry"  # the warehouse, not the data: try the whole batch again later
    ROW = "row"  # something in the data: find the rows, fail only their events
    FATAL = "fatal"  # nothing in this batch can be loaded with these settings


@dataclass(frozen=True, slots=True)
class TableStats:
    table: TableRef
    rows: int
    newest: datetime | None


class RowsExist(Exception):
    """A straight COPY met an id already stored: load the batch again through staging."""


class Transaction(ABC):
    """One open transaction on the warehouse (the backend commits when the block ends)."""

    #: Write rows straight into their table when it may (no staging); :class:`RowsExist`
    #: if some are there already. Off for the second try of a batch that met stored rows.
    direct: bool = True

    #: Qualifies table names in statements (DuckDB: the file's catalog too, see sql.qualified).
    catalog: str | None = None

    def qualified(self, table: TableRef) -> str:
        return sql.qualified(table, self.catalog)

    @abstractmethod
    async def execute(self, statement: str) -> None: ...

    @abstractmethod
    async def query(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    @abstractmethod
    async def columns(self, schemas: Collection[str]) -> dict[TableRef, dict[str, str]]:
        """``table -> column -> SQL type`` of every table in ``schemas``, in column order."""

    @abstractmethod
    async def lock_ddl(self) -> None:
        """Keep other writers' DDL out until this transaction ends."""

    @abstractmethod
    async def write(self, load: TableLoad) -> int:
        """Stage ``load.rows`` and insert them; the number of rows inserted or updated."""

    @abstractmethod
    async def delete(self, table: TableRef, column: str, value: str) -> int: ...


class Backend(ABC):
    dialect: sql.Dialect
    #: Loads that may run at once, each in its own transaction (a DuckDB file has one writer).
    parallel_loads: int = 1

    @abstractmethod
    def describe(self) -> str:
        """Where the data goes, for people (never a credential)."""

    async def start(self) -> None:
        """Open what the backend keeps open; never fails for an unreachable warehouse."""
        return

    async def stop(self) -> None:
        """Close what :meth:`start` opened."""
        return

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    @abstractmethod
    def classify(self, exc: BaseException) -> FailureKind | None:
        """What ``exc`` says about the load; None for an error that is not the database's."""

    async def probe(self) -> tuple[bool, str]:
        """Can a transaction be opened? Never raises."""
        try:
            async with self.transaction() as tx:
                await tx.query("SELECT 1")
        except Exception as exc:
            if self.classify(exc) is None:
                raise
            return False, f"{self.describe()}: {message_of(exc)}"
        return True, f"{self.describe()} accepts connections"


def message_of(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    text = text if text.startswith(name) else f"{name}: {text}"
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."


def state_of(columns: Mapping[TableRef, Mapping[str, str]]) -> SchemaState:
    return {
        table: {name: sql.kind_of(sql_type) for name, sql_type in found.items()}
        for table, found in columns.items()
    }


# ---------------------------------------------------------------- requests and results


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """A batch to load: its events, each with the schema it goes to, in the order of
    ``covers`` (the lane's positions). The events are read, never changed."""

    events: tuple[Event, ...]
    schemas: tuple[str, ...]
    message_ids: tuple[str, ...]
    covers: tuple[int, ...] = ()

    def tables(self) -> dict[str, int]:
        """Rows per table (``schema.table``)."""
        counts: dict[str, int] = {}
        for event, schema in zip(self.events, self.schemas, strict=True):
            for row in rows_for(event, schema):
                name = str(row.table)
                counts[name] = counts.get(name, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did: rows inserted or updated per table, and events it could not store."""

    rows: Mapping[str, int] = field(default_factory=dict)
    #: Index into the request's events -> the database's message for that event's rows.
    rejected: Mapping[int, str] = field(default_factory=dict)
    discarded: int = 0
    transactions: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class UserDeletion:
    """A privacy deletion: every row of ``user_id`` in ``schemas`` (it covers no events)."""

    user_id: str
    schemas: tuple[str, ...]
    covers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DeletionResult:
    """Rows a deletion removed, per ``<schema>.<table>``."""

    deleted: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Progress:
    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    discarded: int = 0
    transactions: int = 0


# ---------------------------------------------------------------- the warehouse


class Warehouse:
    """One destination's warehouse: loads, and the reads the CLI and privacy work need."""

    def __init__(
        self,
        backend: Backend,
        *,
        destination_id: str,
        metrics: WarehouseMetrics | None = None,
        max_transactions: int = MAX_TRANSACTIONS,
    ) -> None:
        self.backend = backend
        self.destination_id = destination_id
        self.metrics = metrics
        self.max_transactions = max_transactions
        self._slots = _Slots(max(1, backend.parallel_loads))
        #: The columns the last load found: batches are cast against them before they wait
        #: for a transaction, so one batch's CPU work overlaps another's database work.
        self._columns: SchemaState = {}

    async def start(self) -> None:
        await self.backend.start()

    async def stop(self) -> None:
        async with self._slots.every():
            await self.backend.stop()

    # ------------------------------------------------------------ loading

    async def load(self, request: LoadRequest) -> LoadResult:
        """Load ``request``; raise for the whole batch, or name the events left out."""
        try:
            return await self._load(request)
        finally:
            # Let a waiting load start its transaction before this task's caller goes on
            # with its own work (the lane: the outcome, the next batch).
            await asyncio.sleep(0)

    async def _load(self, request: LoadRequest) -> LoadResult:
        started = time.monotonic()
        known = self._columns
        prepared = await self._materialize(request, known) if known else None
        if prepared is not None and prepared.incomplete:
            prepared = None  # the batch needs DDL: cast it in the transaction, after the DDL
        preparing = time.monotonic() - started
        async with self._slots.one():
            started = time.monotonic() - preparing  # waiting for a turn is not loading
            progress = _Progress()
            early = _Prepared(prepared, known) if prepared is not None else None
            try:
                await self._attempt(
                    request, list(range(len(request.events))), progress, top=True, prepared=early
                )
            except (RetryableError, PermanentError) as exc:
                if self.metrics is not None:
                    self.metrics.on_failed(self.destination_id, exc.retriable)
                raise
            seconds = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.on_loaded(
                    self.destination_id, progress.rows, seconds, time.time(), progress.discarded
                )
            return LoadResult(
                rows=progress.rows,
                rejected=progress.rejected,
                discarded=progress.discarded,
                transactions=progress.transactions,
                seconds=seconds,
            )

    @staticmethod
    async def _materialize(request: LoadRequest, state: SchemaState) -> Loads:
        """:func:`.shapes.materialize`, a slice of events at a time."""
        rows = Materializer(state, datetime.now(UTC))
        for start in range(0, len(request.events), SLICE):
            await asyncio.sleep(0)
            stop = start + SLICE
            rows.add(request.events[start:stop], request.schemas[start:stop])
        return rows.loads()

    async def _attempt(
        self,
        request: LoadRequest,
        positions: list[int],
        progress: _Progress,
        *,
        top: bool,
        prepared: _Prepared | None = None,
    ) -> None:
        progress.transactions += 1
        events, schemas = request.events, request.schemas
        if not top:
            events = tuple(events[i] for i in positions)
            schemas = tuple(schemas[i] for i in positions)
        try:
            try:
                loads = await self._transaction(events, schemas, prepared, direct=True)
            except RowsExist:
                progress.transactions += 1
                loads = await self._transaction(events, schemas, prepared, direct=False)
        except Exception as exc:
            kind = self.backend.classify(exc)
            if kind is None:
                raise
            message = message_of(exc)
            if kind is FailureKind.RETRY:
                raise RetryableError(
                    f"warehouse load failed, will retry: {message}", reason="warehouse_unavailable"
                ) from exc
            if kind is FailureKind.FATAL and top:
                raise PermanentError(
                    f"warehouse load failed: {message}", reason="warehouse_error"
                ) from exc
            if (
                kind is FailureKind.FATAL
                or len(positions) == 1
                or progress.transactions >= self.max_transactions
            ):
                if len(positions) > 1:
                    message += f" (one of {len(positions)} events failed together)"
                for position in positions:
                    progress.rejected[position] = message
                return
            middle = len(positions) // 2
            await self._attempt(request, positions[:middle], progress, top=False)
            await self._attempt(request, positions[middle:], progress, top=False)
            return
        for load in loads.tables:
            name = str(load.table)
            progress.rows[name] = progress.rows.get(name, 0) + load.written
        progress.discarded += loads.discarded

    async def _transaction(
        self,
        events: Sequence[Event],
        schemas: Sequence[str],
        prepared: _Prepared | None,
        *,
        direct: bool,
    ) -> _Written:
        names = sorted(set(schemas))
        async with self.backend.transaction() as tx:
            tx.direct = direct
            state = state_of(await tx.columns(names))
            if prepared is not None and prepared.still_valid(state):
                loads = prepared.loads
            else:
                loads = materialize(events, schemas, state, datetime.now(UTC))
                if loads.incomplete or any(TableRef(n, DISCARDS) not in state for n in names):
                    # The reference rows (a dict per row) only for a batch that needs DDL.
                    rows = map(rows_for, events, schemas)
                    evolution = evolve(rows, state)
                    if evolution:
                        await tx.lock_ddl()
                        await self._evolve(tx, evolution)
                        state = state_of(await tx.columns(names))
                    loads = materialize(events, schemas, state, datetime.now(UTC))
            written = [_Table(load.table, await tx.write(load)) for load in loads.tables]
        self._columns = {**self._columns, **state}
        return _Written(tuple(written), loads.discarded)

    async def _evolve(self, tx: Transaction, evolution: Evolution) -> None:
        types = self.backend.dialect.type_name
        for schema in evolution.schemas:
            await tx.execute(sql.create_schema(schema, tx.catalog))
        for table, columns in evolution.tables.items():
            key = key_of(table.name)
            typed = [(name, types(kind)) for name, kind in columns.items()]
            await tx.execute(sql.create_table(tx.qualified(table), typed, key))
            # Another writer may have created the table first, with fewer columns.
            for name, sql_type in typed:
                if name not in key:
                    await tx.execute(sql.add_column(tx.qualified(table), name, sql_type))
        for table, columns in evolution.columns.items():
            for name, kind in columns.items():
                await tx.execute(sql.add_column(tx.qualified(table), name, types(kind)))

    # ------------------------------------------------------------ reading and deleting

    async def describe_tables(self, schemas: Collection[str]) -> dict[TableRef, dict[str, str]]:
        async with self._slots.one(), self.backend.transaction() as tx:
            return await tx.columns(schemas)

    async def ddl(self, schemas: Collection[str]) -> list[str]:
        """The DDL the current tables imply: ``CREATE SCHEMA`` and ``CREATE TABLE``."""
        tables = await self.describe_tables(schemas)
        statements = [sql.create_schema(schema) for schema in sorted({t.schema for t in tables})]
        for table in sorted(tables):
            columns = list(tables[table].items())
            statements.append(sql.create_table(sql.qualified(table), columns, key_of(table.name)))
        return statements

    async def stats(self, schemas: Collection[str]) -> list[TableStats]:
        """Rows per table and the newest ``received_at`` (what a data team watches)."""
        async with self._slots.one(), self.backend.transaction() as tx:
            tables = await tx.columns(schemas)
            found = []
            for table in sorted(tables):
                newest = "max(received_at)" if "received_at" in tables[table] else "NULL"
                _, rows = await tx.query(
                    f"SELECT count(*), {newest} FROM {tx.qualified(table)}"  # noqa: S608
                )
                count, latest = rows[0]
                found.append(TableStats(table, int(count), latest))
            return found

    async def query(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        async with self._slots.one(), self.backend.transaction() as tx:
            return await tx.query(statement)

    async def delete_user(self, user_id: str, schemas: Collection[str]) -> dict[str, int]:
        """Delete every row of ``user_id`` in one transaction; rows deleted per table.

        For privacy requests: every table's rows whose ``user_id`` is the user (event tables,
        ``tracks``, ``identifies``, ``pages``, ``screens``, ``groups``, ``aliases``,
        ``discards``), the user's ``users`` row, and aliases naming the user as
        ``previous_id``. Failures are classified like a load's: unreachable, locked or
        deadlocked -> :class:`RetryableError`, anything else the database refuses ->
        :class:`PermanentError` (both carry the database's message, never a credential).
        """
        try:
            return await self._delete_user(user_id, schemas)
        except Exception as exc:
            kind = self.backend.classify(exc)
            if kind is None:
                raise
            message = message_of(exc)
            if kind is FailureKind.RETRY:
                raise RetryableError(
                    f"warehouse deletion failed, will retry: {message}",
                    reason="warehouse_unavailable",
                ) from exc
            raise PermanentError(
                f"warehouse deletion failed: {message}", reason="warehouse_error"
            ) from exc

    async def _delete_user(self, user_id: str, schemas: Collection[str]) -> dict[str, int]:
        async with self._slots.every(), self.backend.transaction() as tx:
            state = state_of(await tx.columns(schemas))
            deleted: dict[str, int] = {}
            for table, column in deletion_targets(state, user_id):
                count = await tx.delete(table, column, user_id)
                deleted[str(table)] = deleted.get(str(table), 0) + count
            return deleted


class _Slots:
    """Turns for transactions: :meth:`one` for a load or a read, :meth:`every` for what no
    load may run beside (stopping, a user's deletion)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._free = asyncio.Semaphore(count)
        self._exclusive = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def one(self) -> AsyncIterator[None]:
        async with self._free:
            yield

    @contextlib.asynccontextmanager
    async def every(self) -> AsyncIterator[None]:
        async with self._exclusive:
            taken = 0
            try:
                while taken < self.count:
                    await self._free.acquire()
                    taken += 1
                yield
            finally:
                for _ in range(taken):
                    self._free.release()


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch already cast against ``columns`` (the columns as the last load found them)."""

    loads: Loads
    columns: SchemaState

    def still_valid(self, current: SchemaState) -> bool:
        """Every table the batch writes has exactly the columns it was cast against."""
        return all(
            current.get(load.table) == self.columns.get(load.table) for load in self.loads.tables
        )


@dataclass(frozen=True, slots=True)
class _Table:
    table: TableRef
    written: int


@dataclass(frozen=True, slots=True)
class _Written:
    tables: tuple[_Table, ...]
    discarded: int


__all__ = [
    "Backend",
    "FailureKind",
    "LoadRequest",
    "LoadResult",
    "Loads",
    "TableStats",
    "Transaction",
    "Warehouse",
]
