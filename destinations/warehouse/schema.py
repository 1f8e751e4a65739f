"""The schema engine: Segment events -> rows of Segment's warehouse tables, and what they need.

Pure code, no database: the backends (:mod:`.postgres`, :mod:`.duckdb_file`) run what it
decides. The layout is Segment's "Warehouse Schemas" reference:

- one schema per source; in it ``tracks``, ``identifies``, ``users``, ``pages``, ``screens``,
  ``groups``, ``accounts``, ``aliases`` and one table per track event name (its snake_case,
  :mod:`.naming`), plus ``discards`` (ours, below);
- every event table has the common columns ``id`` (the messageId), ``received_at``,
  ``sent_at``, ``timestamp``, ``original_timestamp``, ``user_id``, ``anonymous_id``,
  ``context_*`` (the context, flattened) and ``uuid_ts`` (when the row was loaded);
- ``tracks`` has ``event`` (the table's name) and ``event_text`` (the name as sent) but no
  properties; each event's own table has those plus its properties as columns; ``pages`` and
  ``screens`` have ``name`` (pages also ``category``) and the properties; ``identifies`` the
  traits; ``groups`` ``group_id`` and the group's traits; ``aliases`` ``previous_id``;
- ``users`` holds the latest traits of each ``userId`` (``id`` is the user id, no
  ``anonymous_id``), ``accounts`` the latest traits of each ``groupId``: both upserted;
- nested objects are flattened with ``_``, arrays are kept as JSON text, a null never makes a
  column, and a property or trait named like a column of the table itself (``user_id``,
  ``id``, ``event`` ...) is dropped, as Segment drops it.

Types are Segment's five: timestamp, integer, float, boolean and text. A new column takes the
type of its most recent value in the batch that adds it (Segment: "we take the most recent
occurrence of a column and choose its datatype"); from then on the column's type never
changes. A later value of another type is cast to it: numbers and booleans to text, numeric
text to numbers, a float into an integer column loses its fraction (Segment's documented loss
of precision), ``"true"``/``"false"`` to booleans, ISO-8601 text to timestamps. A value that
cannot be cast leaves the column null and is kept, as text, in the schema's ``discards`` table
with the row's id, table and column, so nothing is lost silently and no load fails for it.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from destinations.warehouse.naming import identifier, join, name_for

Event = dict[str, Any]


class ColumnType(StrEnum):
    TIMESTAMP = "timestamp"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TEXT = "text"


class TableRef(NamedTuple):
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


class Row(NamedTuple):
    """What one event puts in one table: column -> JSON value (never None), before casting.

    A named tuple rather than a dataclass: two are made per event on the load's hot path.
    """

    table: TableRef
    values: Mapping[str, Any]


@functools.lru_cache(maxsize=4096)
def table_ref(schema: str, name: str) -> TableRef:
    return TableRef(schema, name)


#: table -> column -> type, as the warehouse has them now.
SchemaState = dict[TableRef, dict[str, ColumnType]]

TRACKS = "tracks"
IDENTIFIES = "identifies"
USERS = "users"
PAGES = "pages"
SCREENS = "screens"
GROUPS = "groups"
ACCOUNTS = "accounts"
ALIASES = "aliases"
DISCARDS = "discards"
#: The calls, each of which has its rows (:func:`rows_for`).
CALL_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
FIXED_TABLES = frozenset(
    {TRACKS, IDENTIFIES, USERS, PAGES, SCREENS, GROUPS, ACCOUNTS, ALIASES, DISCARDS}
)
#: Tables holding the latest state of one thing (upserted on ``id``), not one row per call.
UPSERTED = frozenset({USERS, ACCOUNTS})

_T, _I, _F, _B, _S = (
    ColumnType.TIMESTAMP,
    ColumnType.INTEGER,
    ColumnType.FLOAT,
    ColumnType.BOOLEAN,
    ColumnType.TEXT,
)
#: Columns of every call table, with their fixed types (ids are text whatever was sent).
COMMON: dict[str, ColumnType] = {
    "id": _S,
    "received_at": _T,
    "sent_at": _T,
    "timestamp": _T,
    "original_timestamp": _T,
    "user_id": _S,
    "anonymous_id": _S,
    "uuid_ts": _T,
}
_STATE_COLUMNS: dict[str, ColumnType] = {"id": _S, "received_at": _T, "uuid_ts": _T}
_DISCARD_COLUMNS: dict[str, ColumnType] = {
    "id": _S,
    "table_name": _S,
    "column_name": _S,
    "column_type": _S,
    "value": _S,
    "received_at": _T,
    "user_id": _S,
    "uuid_ts": _T,
}
_DECLARED: dict[str, dict[str, ColumnType]] = {
    TRACKS: {**COMMON, "event": _S, "event_text": _S},
    IDENTIFIES: COMMON,
    PAGES: {**COMMON, "name": _S, "category": _S},
    SCREENS: {**COMMON, "name": _S},
    GROUPS: {**COMMON, "group_id": _S},
    ALIASES: {**COMMON, "previous_id": _S},
    USERS: _STATE_COLUMNS,
    ACCOUNTS: _STATE_COLUMNS,
    DISCARDS: _DISCARD_COLUMNS,
}
_EVENT_TABLE = _DECLARED[TRACKS]
KEYS: dict[str, tuple[str, ...]] = {DISCARDS: ("id", "table_name", "column_name")}
DEFAULT_KEY = ("id",)
#: Columns a new table gets whatever its first rows hold.
_BASE = ("id", "received_at", "uuid_ts")

#: Deeper objects are kept as JSON text in one column (JSON itself allows 1,024 levels).
MAX_DEPTH = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def declared_columns(table: str) -> Mapping[str, ColumnType]:
    """Columns of ``table`` whose type is fixed by the schema, not by the data."""
    return _DECLARED.get(table, _EVENT_TABLE)


def key_of(table: str) -> tuple[str, ...]:
    return KEYS.get(table, DEFAULT_KEY)


def event_table(event_name: str) -> str:
    """The table of a track event: its snake_case; ``_`` first if it is one of ours."""
    name = name_for(event_name)
    return f"_{name}"[:63] if name in FIXED_TABLES else name


def schema_name(source_id: str) -> str:
    return name_for(source_id)


# ---------------------------------------------------------------- events -> rows


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


#: (parent path, key) -> (snake_case path, column name): names are computed once per
#: distinct key, not once per event (bounded: unbounded key spaces stop being cached).
_NAMES: dict[tuple[str, Any], tuple[str, str]] = {}
_NAMES_LIMIT = 100_000


def _name(prefix: str, key: Any) -> tuple[str, str]:
    path = join(prefix, str(key))
    found = (path, identifier(path, "" if path else f"{prefix}.{key}"))
    if len(_NAMES) < _NAMES_LIMIT:
        _NAMES[(prefix, key)] = found
    return found


def flatten(
    obj: Mapping[str, Any],
    prefix: str,
    out: dict[str, Any],
    skip: Mapping[str, Any] | frozenset[str] = frozenset(),
    depth: int = 0,
) -> None:
    """Put ``obj``'s leaves in ``out`` as columns: ``{"a": {"b": 1}}`` -> ``a_b = 1``."""
    names = _NAMES
    for key, value in obj.items():
        if value is None:
            continue
        found = names.get((prefix, key)) or _name(prefix, key)
        kind = type(value)
        if kind is dict:
            if depth < MAX_DEPTH:
                flatten(value, found[0], out, skip, depth + 1)
                continue
            value = _json_text(value)
        elif kind is list:
            value = _json_text(value)
        column = found[1]
        if column not in skip:
            out[column] = value


_COMMON_FIELDS = (
    ("id", "messageId"),
    ("received_at", "receivedAt"),
    ("sent_at", "sentAt"),
    ("timestamp", "timestamp"),
    ("original_timestamp", "originalTimestamp"),
    ("user_id", "userId"),
    ("anonymous_id", "anonymousId"),
)


def _common(event: Event) -> dict[str, Any]:
    row: dict[str, Any] = {}
    context = event.get("context")
    if type(context) is dict:
        flatten(context, "context", row)
    get = event.get
    for column, field_name in _COMMON_FIELDS:
        value = get(field_name)
        if value is not None:
            row[column] = value
    return row


def _own(event: Event, field_name: str, skip: Mapping[str, Any]) -> dict[str, Any]:
    """The event's properties or traits as columns, minus those named like the table's own."""
    values: dict[str, Any] = {}
    nested = event.get(field_name)
    if isinstance(nested, dict):
        flatten(nested, "", values, skip)
    return values


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def rows_for(event: Event, schema: str) -> tuple[Row, ...]:
    """Every row one event adds, in every table it reaches (pure: same event, same rows)."""
    kind = event.get("type")
    common = _common(event)
    if kind == "track":
        name = str(event.get("event") or "")
        table = event_table(name)
        common["event"] = table
        common["event_text"] = name
        own = _own(event, "properties", _EVENT_TABLE)
        own.update(common)
        return (Row(table_ref(schema, TRACKS), common), Row(table_ref(schema, table), own))
    if kind == "identify":
        traits = _own(event, "traits", COMMON)
        traits.update(common)
        rows = [Row(table_ref(schema, IDENTIFIES), traits)]
        user_id = _text(event.get("userId"))
        if user_id:
            state = _own(event, "traits", _STATE_COLUMNS)
            state.update(_state(user_id, common))
            rows.append(Row(table_ref(schema, USERS), state))
        return tuple(rows)
    if kind in ("page", "screen"):
        table = PAGES if kind == "page" else SCREENS
        declared = _DECLARED[table]
        values = _own(event, "properties", declared)
        values.update(common)
        for column in ("name", "category") if kind == "page" else ("name",):
            if event.get(column) is not None:
                values[column] = event[column]
        return (Row(table_ref(schema, table), values),)
    if kind == "group":
        group_id = _text(event.get("groupId"))
        values = _own(event, "traits", _DECLARED[GROUPS])
        values.update(common)
        if group_id is not None:
            values["group_id"] = group_id
        rows = [Row(table_ref(schema, GROUPS), values)]
        if group_id:
            state = _own(event, "traits", _STATE_COLUMNS)
            state.update(_state(group_id, common))
            rows.append(Row(table_ref(schema, ACCOUNTS), state))
        return tuple(rows)
    if kind == "alias":
        values = _own(event, "traits", _DECLARED[ALIASES])
        values.update(common)
        if event.get("previousId") is not None:
            values["previous_id"] = event["previousId"]
        return (Row(table_ref(schema, ALIASES), values),)
    raise ValueError(f"unknown call type {kind!r}")


def _state(entity_id: str, common: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {"id": entity_id}
    if "received_at" in common:
        state["received_at"] = common["received_at"]
    return state


# ---------------------------------------------------------------- types


_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d+)?(?:Z|z|[+-]\d{2}:?\d{2})?$"
)


@functools.lru_cache(maxsize=8192)
def parse_timestamp(text: str) -> datetime | None:
    """ISO-8601 date and time (seconds required) -> aware datetime; None if not one."""
    match = _TIMESTAMP.match(text)
    if match is None:
        return None
    fraction = match.group("fraction")
    if fraction is not None and len(fraction) > 7:  # Python takes at most microseconds
        text = text[: match.start("fraction") + 7] + text[match.end("fraction") :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def infer(value: Any) -> ColumnType:
    """The column type a first value implies."""
    if isinstance(value, bool):
        return ColumnType.BOOLEAN
    if isinstance(value, int):
        return ColumnType.INTEGER if INT64_MIN <= value <= INT64_MAX else ColumnType.FLOAT
    if isinstance(value, float):
        return ColumnType.FLOAT
    if isinstance(value, str) and parse_timestamp(value) is not None:
        return ColumnType.TIMESTAMP
    return ColumnType.TEXT


class _Uncastable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCASTABLE"


UNCASTABLE: Any = _Uncastable()
_TRUE = frozenset({"true", "t", "yes", "1"})
_FALSE = frozenset({"false", "f", "no", "0"})
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")


def _to_text(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        return repr(value)
    return str(value)


def _to_integer(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return value if INT64_MIN <= value <= INT64_MAX else UNCASTABLE
    if kind is bool:
        return int(value)
    if kind is float:
        # Segment keeps the first type: a float in an integer column loses its fraction.
        return (
            int(value) if math.isfinite(value) and INT64_MIN <= value <= INT64_MAX else UNCASTABLE
        )
    if kind is str:
        if _INTEGER.match(value):
            return _to_integer(int(value))
        number = _to_float(value)
        return UNCASTABLE if number is UNCASTABLE else _to_integer(number)
    return UNCASTABLE


def _to_float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int or kind is bool:
        return float(value)
    if kind is str:
        try:
            number = float(value)
        except ValueError:
            return UNCASTABLE
        return number if math.isfinite(number) else UNCASTABLE
    return UNCASTABLE


def _to_boolean(value: Any) -> Any:
    kind = type(value)
    if kind is bool:
        return value
    if kind is int and value in (0, 1):
        return bool(value)
    if kind is str:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return UNCASTABLE


def _to_timestamp(value: Any) -> Any:
    if type(value) is str:
        moment = _timestamp(value)
        return UNCASTABLE if moment is None else moment
    return UNCASTABLE


@functools.lru_cache(maxsize=8192)
def _str_timestamp(text: str) -> Any:
    moment = _timestamp(text)
    return UNCASTABLE if moment is None else moment


@functools.lru_cache(maxsize=8192)
def _timestamp(text: str) -> datetime | None:
    """Any ISO-8601 date or date and time Python reads (a column already a timestamp takes
    ``2026-11-23`` too; only a new column needs :func:`parse_timestamp`'s stricter test)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return parse_timestamp(text)  # more than microseconds, say
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


CASTS = {
    ColumnType.TEXT: _to_text,
    ColumnType.INTEGER: _to_integer,
    ColumnType.FLOAT: _to_float,
    ColumnType.BOOLEAN: _to_boolean,
    ColumnType.TIMESTAMP: _to_timestamp,
}


#: The Python type a column's values already have when they need no cast (integers are
#: always range-checked, timestamps always parsed).
_NATIVE: dict[ColumnType, type | None] = {
    ColumnType.TEXT: str,
    ColumnType.FLOAT: float,
    ColumnType.BOOLEAN: bool,
    ColumnType.INTEGER: None,
    ColumnType.TIMESTAMP: None,
}


def cast(value: Any, target: ColumnType) -> Any:
    """``value`` as a Python value of the column's type, or :data:`UNCASTABLE`."""
    return CASTS[target](value)


# ---------------------------------------------------------------- evolution


@dataclass(frozen=True, slots=True)
class Evolution:
    """What a batch needs that the warehouse lacks: schemas, tables, columns (with types)."""

    schemas: tuple[str, ...] = ()
    tables: Mapping[TableRef, Mapping[str, ColumnType]] = field(default_factory=dict)
    columns: Mapping[TableRef, Mapping[str, ColumnType]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.schemas or self.tables or self.columns)

    def touched(self) -> set[TableRef]:
        return {*self.tables, *self.columns}


def evolve(
    batch: Iterable[Sequence[Row]], state: Mapping[TableRef, Mapping[str, Any]]
) -> Evolution:
    """The schemas, tables and columns ``batch`` needs beyond ``state``.

    A new column's type is that of its value in the batch's last row that has one; declared
    columns (ids, timestamps, ``event`` ...) always get their declared type. Every schema the
    batch writes to gets its ``discards`` table.
    """
    new_tables: dict[TableRef, dict[str, ColumnType]] = {}
    new_columns: dict[TableRef, dict[str, ColumnType]] = {}
    schemas: set[str] = set()
    for rows in batch:
        for row in rows:
            schemas.add(row.table.schema)
            known = state.get(row.table)
            if known is None:
                missing = new_tables.setdefault(row.table, {})
                unknown = list(row.values.items())
            else:
                unknown = [(c, v) for c, v in row.values.items() if c not in known]
                if not unknown:
                    continue
                missing = new_columns.setdefault(row.table, {})
            declared = declared_columns(row.table.name)
            for column, value in unknown:
                missing[column] = declared.get(column) or infer(value)
    for schema in schemas:
        discards = TableRef(schema, DISCARDS)
        if discards not in state:
            new_tables.setdefault(discards, {})
    for table, found in new_tables.items():
        declared = declared_columns(table.name)
        base = (
            tuple(declared)
            if table.name == DISCARDS
            else (
                *key_of(table.name),
                *(c for c in _BASE if c in declared and c not in key_of(table.name)),
            )
        )
        ordered = {name: declared[name] for name in base}
        ordered.update((k, v) for k, v in found.items() if k not in ordered)
        new_tables[table] = ordered
    known_schemas = {table.schema for table in state}
    return Evolution(
        schemas=tuple(sorted(schemas - known_schemas)),
        tables=new_tables,
        columns=new_columns,
    )


def apply(state: SchemaState, evolution: Evolution) -> SchemaState:
    """``state`` as it will be once ``evolution`` ran (a new mapping; ``state`` is kept)."""
    merged: SchemaState = {table: dict(columns) for table, columns in state.items()}
    for table, columns in evolution.tables.items():
        merged.setdefault(table, {}).update(
            (k, v) for k, v in columns.items() if k not in merged.get(table, {})
        )
    for table, columns in evolution.columns.items():
        existing = merged.setdefault(table, {})
        existing.update((k, v) for k, v in columns.items() if k not in existing)
    return merged


# ---------------------------------------------------------------- rows -> loads


@dataclass(frozen=True, slots=True)
class TableLoad:
    """Rows for one table: ``rows`` are tuples in ``columns`` order, typed for the column."""

    table: TableRef
    key: tuple[str, ...]
    columns: tuple[tuple[str, ColumnType], ...]
    rows: list[tuple[Any, ...]]
    upsert: bool = False


@dataclass(frozen=True, slots=True)
class Loads:
    tables: tuple[TableLoad, ...]
    discarded: int = 0
    #: Some row needs a table or column ``state`` lacks (their values were left out).
    incomplete: bool = False


def _sort_key(values: Mapping[str, Any]) -> datetime:
    moment = values.get("received_at")
    return moment if isinstance(moment, datetime) else datetime.min.replace(tzinfo=UTC)


def cast_for(kind: type, target: ColumnType) -> Callable[[Any], Any] | None:
    """The cast a value of Python type ``kind`` needs for a ``target`` column; None if none.

    Both ways of making rows (:class:`TypedRows` and the per-event-shape plans of
    :mod:`.shapes`) decide with this one function, so they cast alike.
    """
    if kind is _NATIVE[target]:
        return None
    # Text into a timestamp column (most casts): one cached C-level call.
    return _str_timestamp if target is _T and kind is str else CASTS[target]


@dataclass(frozen=True, slots=True)
class _Shape:
    """How to cast rows of one table with the same columns whose values have the same types.

    Rows of one event type mostly share a shape, so the per-value work (which column, which
    type, is a cast needed) is done once per shape; a row then costs its casts alone.
    """

    positions: Mapping[str, int]  # column -> index in the row's values (known columns only)
    casts: tuple[tuple[int, Any, ColumnType, str], ...]  # (index, cast, type, column)
    id_index: int
    incomplete: bool  # a column the table lacks: its value is left out
    upsert: bool  # users/accounts: rows are folded, not appended


def _compile(
    table: TableRef, keys: Sequence[str], values: Sequence[Any], state: Any
) -> _Shape | None:
    columns: Mapping[str, ColumnType] | None = state.get(table)
    if columns is None:
        return None
    positions: dict[str, int] = {}
    casts = []
    incomplete = False
    for index, (name, value) in enumerate(zip(keys, values, strict=True)):
        kind = columns.get(name)
        if kind is None:
            incomplete = True
            continue
        positions[name] = index
        cast_to = None if value is None else cast_for(type(value), kind)
        if cast_to is not None:
            casts.append((index, cast_to, kind, name))
    upsert = table.name in UPSERTED
    return _Shape(positions, tuple(casts), positions.get("id", -1), incomplete, upsert)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A row :meth:`TypedRows.add` cast: its values, gathered into column order at the end."""

    shape: _Shape
    values: list[Any]


class TypedRows:
    """One batch's rows, cast to their columns' types and grouped per table, as they come.

    Event tables keep the first row of each ``id`` (a batch may hold a duplicate); ``users``
    and ``accounts`` fold all rows of one id in ``received_at`` order, later non-null values
    winning, so the upsert sees one row per id. Values that cannot be cast become rows of the
    schema's ``discards`` table. Each event table's columns in this batch are its key, the
    columns any of its rows has, in the table's order, and ``uuid_ts``.

    Rows come two ways: :meth:`add`, one :class:`Row` at a time (the reference path, see
    :class:`_Shape`), or as the compiled plans of :mod:`.shapes` make them: tuples put
    straight into :attr:`appended` in the order of their own columns (declared with
    :meth:`present`), ending with the ``uuid_ts`` object :meth:`stamp` gave for those
    columns, and state rows through :meth:`fold`.
    """

    def __init__(
        self, state: Mapping[TableRef, Mapping[str, ColumnType]], uuid_ts: datetime
    ) -> None:
        self.state = state
        self.uuid_ts = uuid_ts
        #: table -> id -> the row: a tuple (see :meth:`stamp`), or a :class:`_Pending`.
        self.appended: dict[TableRef, dict[Any, Any]] = {}
        self.folded: dict[TableRef, dict[Any, dict[str, Any]]] = {}
        self.discarded = 0
        self.incomplete = False
        self._shapes: dict[tuple[Any, ...], _Shape | None] = {}
        self._pending: set[TableRef] = set()
        self._present: dict[TableRef, set[str]] = {}
        #: table -> id(stamp) -> (stamp, the columns of the tuples ending with it)
        self._orders: dict[TableRef, dict[int, tuple[datetime, tuple[str, ...]]]] = {}
        self._discards: dict[str, list[dict[str, Any]]] = {}

    def stamp(self, table: TableRef, columns: tuple[str, ...]) -> datetime:
        """The ``uuid_ts`` that tuples of ``table`` in ``columns`` order end with.

        Equal to the batch's ``uuid_ts``, but one object per column order, so that a table
        whose rows came in several orders is put in one by telling them apart by identity
        (the usual batch has one order per table and costs nothing).
        """
        orders = self._orders.setdefault(table, {})
        for stamp, found in orders.values():
            if found == columns:
                return stamp
        stamp = self.uuid_ts if not orders else self.uuid_ts + timedelta(0)
        orders[id(stamp)] = (stamp, columns)
        return stamp

    def present(self, table: TableRef, columns: Iterable[str]) -> None:
        """Rows of ``table`` in this batch have ``columns``."""
        self._present.setdefault(table, set()).update(columns)

    def add(self, row: Row) -> None:
        table = row.table
        values = list(row.values.values())
        signature = (table, *row.values, *map(type, values))
        shape = self._shapes.get(signature)
        if shape is None:
            if signature in self._shapes:
                self.incomplete = True  # the table does not exist yet
                return
            shape = self._shapes[signature] = _compile(table, list(row.values), values, self.state)
            if shape is None:
                self.incomplete = True
                return
            # Its columns are the table's in this batch even if its rows turn out duplicates.
            if not shape.upsert:
                self.present(table, shape.positions)
        self.incomplete = self.incomplete or shape.incomplete
        for index, cast_to, kind, column in shape.casts:
            converted = cast_to(values[index])
            if converted is UNCASTABLE:
                self.discarded += 1
                self._discards.setdefault(table.schema, []).append(_discard(row, column, kind))
                converted = None
            values[index] = converted
        identity = values[shape.id_index] if shape.id_index >= 0 else None
        if shape.upsert:
            self.fold(
                table,
                identity,
                {c: values[i] for c, i in shape.positions.items() if values[i] is not None},
            )
            return
        table_rows = self.appended.get(table)
        if table_rows is None:
            table_rows = self.appended[table] = {}
        if identity not in table_rows:  # a duplicate id in one batch: the first stays
            values.append(None)
            values.append(self.uuid_ts)
            table_rows[identity] = _Pending(shape, values)
            self._pending.add(table)

    def fold(self, table: TableRef, identity: Any, typed: dict[str, Any]) -> None:
        """One more state row (non-null values only) for ``users``/``accounts``."""
        rows = self.folded.get(table)
        if rows is None:
            rows = self.folded[table] = {}
        earlier = rows.get(identity)
        rows[identity] = typed if earlier is None else _fold(earlier, typed)

    def loads(self) -> Loads:
        for schema, kept in self._discards.items():
            found = self.folded.setdefault(TableRef(schema, DISCARDS), {})
            for discard in kept:
                found.setdefault(
                    (discard["id"], discard["table_name"], discard["column_name"]), discard
                )
        loads = [self._appended(table, rows) for table, rows in self.appended.items() if rows]
        loads += [
            _folded(table, rows, self.state, self.uuid_ts) for table, rows in self.folded.items()
        ]
        return Loads(tuple(loads), self.discarded, self.incomplete)

    def _appended(self, table: TableRef, rows: Mapping[Any, Any]) -> TableLoad:
        names = column_order(table, self._present.get(table, ()), self.state)
        orders = self._orders.get(table, {})
        if table not in self._pending and all(o == tuple(names) for _, o in orders.values()):
            ordered = list(rows.values())  # every row is in the batch's order already
        else:
            ordered = []
            cache: dict[int, Any] = {}  # per shape or order: one C-level gather into names
            for row in rows.values():
                if type(row) is _Pending:
                    shape, values = row.shape, row.values
                    getter = cache.get(id(shape))
                    if getter is None:
                        # Its values end with a None (for columns it lacks) and uuid_ts.
                        none_slot, stamp_slot = len(values) - 2, len(values) - 1
                        indexes = [
                            stamp_slot if n == "uuid_ts" else shape.positions.get(n, none_slot)
                            for n in names
                        ]
                        getter = cache[id(shape)] = operator.itemgetter(*indexes)
                    ordered.append(getter(values))
                    continue
                getter = cache.get(id(row[-1]))
                if getter is None:
                    columns = orders[id(row[-1])][1]
                    where = {name: index for index, name in enumerate(columns)}
                    indexes = [where.get(n, len(columns)) for n in names]  # a None at the end
                    getter = cache[id(row[-1])] = operator.itemgetter(*indexes)
                ordered.append(getter((*row, None)))
        key = key_of(table.name)
        return TableLoad(table, key, _typed_columns(table, names, self.state), ordered)


def materialize(
    batch: Iterable[Sequence[Row]],
    state: Mapping[TableRef, Mapping[str, ColumnType]],
    uuid_ts: datetime,
) -> Loads:
    """Cast every value to its column's type and group the rows per table (the reference
    path: see :class:`TypedRows`; loads take :func:`destinations.warehouse.shapes.materialize`,
    which gives the same rows)."""
    typed = TypedRows(state, uuid_ts)
    add = typed.add
    for rows in batch:
        for row in rows:
            add(row)
    return typed.loads()


def column_order(table: TableRef, present: Iterable[str], state: Any) -> list[str]:
    """Key first, then the present columns in the table's order, ``uuid_ts`` last."""
    order: Mapping[str, ColumnType] = state.get(table, {})
    key = key_of(table.name)
    found = set(present)
    return [*key, *(c for c in order if c in found and c not in key and c != "uuid_ts"), "uuid_ts"]


def _typed_columns(
    table: TableRef, names: Sequence[str], state: Any
) -> tuple[tuple[str, ColumnType], ...]:
    order: Mapping[str, ColumnType] = state.get(table, {})
    return tuple((name, order.get(name, ColumnType.TEXT)) for name in names)


def _folded(
    table: TableRef, rows: Mapping[Any, dict[str, Any]], state: Any, uuid_ts: datetime
) -> TableLoad:
    present: set[str] = set()
    for values in rows.values():
        present.update(values)
    names = column_order(table, present, state)
    ordered = []
    for values in rows.values():
        values["uuid_ts"] = uuid_ts
        ordered.append(tuple(map(values.get, names)))
    key = key_of(table.name)
    upsert = table.name in UPSERTED
    return TableLoad(table, key, _typed_columns(table, names, state), ordered, upsert=upsert)


def _discard(row: Row, column: str, target: ColumnType) -> dict[str, Any]:
    value = row.values[column]
    received = _to_timestamp(row.values.get("received_at"))
    return {
        "id": _to_text(row.values.get("id", "")),
        "table_name": row.table.name,
        "column_name": column,
        "column_type": str(target),
        "value": value if isinstance(value, str) else _json_text(value),
        "received_at": None if received is UNCASTABLE else received,
        "user_id": _owner(row),
    }


def _owner(row: Row) -> str | None:
    """The user a row belongs to (for discards, so a user's deletion reaches them too)."""
    owner = row.values.get("id") if row.table.name == USERS else row.values.get("user_id")
    return None if owner is None else _to_text(owner)


def _fold(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One state row from two of the same id: the newer one's values win where it has them."""
    if _sort_key(earlier) <= _sort_key(later):
        return {**earlier, **later}
    return {**later, **earlier}


# ---------------------------------------------------------------- privacy


def deletion_targets(
    state: Mapping[TableRef, Mapping[str, Any]], user_id: str
) -> list[tuple[TableRef, str]]:
    """(table, column) pairs whose rows equal to ``user_id`` are that user's rows.

    Every table with a ``user_id`` column (the call tables, event tables and ``discards``);
    ``users`` by ``id``; ``aliases`` also by ``previous_id`` (the alias call named it).
    """
    targets: list[tuple[TableRef, str]] = []
    for table in sorted(state):
        columns = state[table]
        if table.name == USERS:
            targets.append((table, "id"))
            continue
        if "user_id" in columns:
            targets.append((table, "user_id"))
        if table.name == ALIASES and "previous_id" in columns:
            targets.append((table, "previous_id"))
    return targets
