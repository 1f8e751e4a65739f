"""SQL text both backends share: quoting, DDL and the two load statements.

PostgreSQL and DuckDB agree on everything the warehouse needs (``CREATE ... IF NOT EXISTS``,
``ADD COLUMN IF NOT EXISTS``, ``INSERT ... ON CONFLICT``); a :class:`Dialect` holds where
they differ: type names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from destinations.warehouse.naming import quote
from destinations.warehouse.schema import ColumnType, TableLoad, TableRef


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    types: Mapping[ColumnType, str]

    def type_name(self, kind: ColumnType) -> str:
        return self.types[kind]


def kind_of(sql_type: str) -> ColumnType:
    """Our type for a column type read back from the database (a person may have changed it).

    Values are cast to this kind, then the database converts them to the column's own type
    when the staged rows are inserted (``bigint`` into ``integer``, ``text`` into
    ``varchar(512)`` ...); a value it cannot convert fails only its own event.
    """
    lowered = sql_type.lower()
    if lowered.startswith(("timestamp", "date")):
        return ColumnType.TIMESTAMP
    if lowered.startswith("bool"):
        return ColumnType.BOOLEAN
    if lowered.startswith(
        ("bigint", "integer", "smallint", "int", "hugeint", "tinyint", "ubigint", "uinteger")
    ):
        return ColumnType.INTEGER
    if lowered.startswith(("double", "real", "float", "numeric", "decimal")):
        return ColumnType.FLOAT
    return ColumnType.TEXT


def qualified(table: TableRef, catalog: str | None = None) -> str:
    """``"schema"."table"``, or ``"catalog"."schema"."table"`` where a schema may share its
    name with a catalog (DuckDB names a file's catalog after the file: ``web.duckdb`` holds
    catalog ``web``, and then ``web.tracks`` would be ambiguous)."""
    name = f"{quote(table.schema)}.{quote(table.name)}"
    return name if catalog is None else f"{quote(catalog)}.{name}"


def create_schema(schema: str, catalog: str | None = None) -> str:
    name = quote(schema) if catalog is None else f"{quote(catalog)}.{quote(schema)}"
    return f"CREATE SCHEMA IF NOT EXISTS {name}"


def create_table(target: str, columns: Sequence[tuple[str, str]], key: Sequence[str]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with ``(name, sql type)`` columns and a primary key."""
    body = [
        f"{quote(name)} {sql_type}{' NOT NULL' if name in key else ''}"
        for name, sql_type in columns
    ]
    body.append(f"PRIMARY KEY ({', '.join(quote(k) for k in key)})")
    return f"CREATE TABLE IF NOT EXISTS {target} (\n  " + ",\n  ".join(body) + "\n)"


def add_column(target: str, name: str, sql_type: str) -> str:
    return f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {quote(name)} {sql_type}"


def insert(load: TableLoad, target: str, source: str) -> str:
    """Insert the staged rows of ``source`` into ``target`` (``load.table``, qualified).

    Event tables: insert-if-absent on the key (the messageId), so a replayed or duplicated
    batch adds nothing. ``users``/``accounts``: upsert on ``id`` where each column takes the
    newer row's value when it has one and keeps the stored one otherwise (an older row,
    arriving late, only fills gaps), so the table holds the latest traits whatever order the
    loads came in.
    """
    names = [name for name, _ in load.columns]
    listed = ", ".join(quote(n) for n in names)
    conflict = ", ".join(quote(k) for k in load.key)
    # Every name is a quoted identifier and ``source`` is ours: nothing here comes from a user.
    # In key order: two loads running at once take the rows' locks in the same order.
    head = (
        f"INSERT INTO {target} AS t ({listed}) "  # noqa: S608
        f"SELECT {listed} FROM {source} ORDER BY {conflict}"
    )
    if not load.upsert:
        return f"{head} ON CONFLICT ({conflict}) DO NOTHING"
    newer = "(t.received_at IS NULL OR excluded.received_at >= t.received_at)"
    updates = []
    for name in names:
        column = quote(name)
        if name in load.key:
            continue
        if name == "received_at":
            updates.append(f"{column} = GREATEST(t.{column}, excluded.{column})")
        elif name == "uuid_ts":
            updates.append(f"{column} = excluded.{column}")
        else:
            updates.append(
                f"{column} = CASE WHEN {newer} THEN COALESCE(excluded.{column}, t.{column}) "
                f"ELSE COALESCE(t.{column}, excluded.{column}) END"
            )
    return f"{head} ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(updates)}"
