"""Events -> typed rows through one plan per event shape: the load's fast path.

Which rows an event adds, which column each value lands in and which cast it needs depend
only on the event's *shape*: its call type (and track event name), the keys of its context
and properties or traits at every level, and the Python type of every value. So that work is
done once per shape, not once per value:

- :func:`observe` (per event, no database involved) walks the event's objects once, making
  the shape's signature and a flat list of the event's values (arrays, and objects deeper
  than :data:`~.schema.MAX_DEPTH`, as JSON text, as :func:`~.schema.flatten` keeps them). The
  signature finds the shape's :class:`EventShape`. A new shape's plan is compiled by running
  the reference code, :func:`~.schema.rows_for`, on a probe: the event with every value
  replaced by a placeholder naming its place in the flat list; where each placeholder lands is
  where that value goes. The plan is then checked against the reference rows of the event it
  was made from; a shape whose plan would differ takes the reference path (none is known:
  cheap insurance, as are the other refusals below).
- :func:`materialize` (per batch, against the tables' current columns) binds each distinct
  shape once: which values need which cast, and one C-level gather (``itemgetter``) per table
  that picks the row's tuple, in the table's column order for this batch, out of the event's
  values, the shape's constants and the casts. An event then costs its casts and one gather
  per row; no dict per row, no per-row signature. An event with a value that cannot be cast
  goes through the reference path (:meth:`~.schema.TypedRows.add`), which keeps the value in
  ``discards``.

Both paths give the same rows (``tests/destinations/warehouse/test_shapes.py`` checks it over
generated events).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import NoneType
from typing import Any

import orjson

from destinations.warehouse.schema import (
    DISCARDS,
    MAX_DEPTH,
    UNCASTABLE,
    UPSERTED,
    ColumnType,
    Event,
    Loads,
    Row,
    TableRef,
    TypedRows,
    cast_for,
    column_order,
    rows_for,
)

#: The event fields :func:`~.schema.rows_for` reads for each call type, in the order of an
#: event's flat values: the common ones, then the object of the type's own columns (always at
#: :data:`_OWN`), then what else the type reads.
_COMMON_FIELDS = (
    "type",
    "messageId",
    "receivedAt",
    "sentAt",
    "timestamp",
    "originalTimestamp",
    "userId",
    "anonymousId",
    "context",
)
_FIELDS = {
    "track": (*_COMMON_FIELDS, "properties", "event"),
    "page": (*_COMMON_FIELDS, "properties", "name", "category"),
    "screen": (*_COMMON_FIELDS, "properties", "name"),
    "identify": (*_COMMON_FIELDS, "traits"),
    "group": (*_COMMON_FIELDS, "traits", "groupId"),
    "alias": (*_COMMON_FIELDS, "traits", "previousId"),
}
_TYPE, _USER_ID, _CONTEXT, _OWN, _EXTRA = 0, 6, 8, 9, 10  # _EXTRA: track's event, groupId
#: Track event names a signature may hold (they name the table, so they are part of it).
_NAME_KINDS = frozenset({str, NoneType, int, float, bool})

#: Shapes seen so far, by their whole signature; None for a shape that takes the reference
#: path. Bounded: past the limit it starts over (a few events are compiled again).
_SHAPES: dict[tuple[Any, ...], EventShape | None] = {}
SHAPES_LIMIT = 4096
#: The shapes last seen under each top-level signature (call type and name, top-level value
#: types, the keys of the own object), most recent first: their guards are tried before the
#: whole signature is made.
_RECENT: dict[tuple[Any, ...], list[EventShape]] = {}
RECENT_PER_KEY = 3
_UNSEEN: Any = object()


@dataclass(frozen=True, slots=True)
class RowPlan:
    """One row an event of a shape adds: its table, and where each column's value comes from."""

    table: TableRef
    columns: tuple[str, ...]  # in the reference row's order
    sources: tuple[int, ...]  # per column: an index into the event's values + the constants


@dataclass(frozen=True, slots=True, eq=False)
class EventShape:
    """The compiled plan of one event shape (compared and hashed by identity)."""

    schema: str
    rows: tuple[RowPlan, ...]
    #: Values every event of the shape gives alike (``tracks.event``, ``event_text`` ...).
    constants: tuple[Any, ...]
    #: The Python type of each value and constant (what decides its cast).
    kinds: tuple[type, ...]
    #: ``guard(top values)``: the event's flat values if its objects have exactly this
    #: shape's keys and value types, else None (see :func:`_guard`).
    guard: Callable[[list[Any]], list[Any] | None]

    def rows_of(self, values: Sequence[Any]) -> tuple[Row, ...]:
        """The event's rows as :func:`~.schema.rows_for` makes them (for the reference path)."""
        every = [*values, *self.constants]
        return tuple(
            Row(plan.table, {c: every[s] for c, s in zip(plan.columns, plan.sources, strict=True)})
            for plan in self.rows
        )


# ---------------------------------------------------------------- per event, no state


def observe(event: Event, schema: str) -> tuple[EventShape, list[Any]] | None:
    """The event's shape and flat values, or None if it takes the reference path.

    None for anything that is not one of the six call types (the reference path tells why)
    and for the rare shapes the plans leave to it (a track event named by an object, an id
    made text from a number, keys that are not text ...).
    """
    kind = event.get("type")
    fields = _FIELDS.get(kind) if type(kind) is str else None
    if fields is None:
        return None
    top: list[Any] = list(map(event.get, fields))
    kinds = tuple(map(type, top))
    detail: Any = None
    if kind == "track":
        if kinds[_EXTRA] not in _NAME_KINDS:
            return None
        detail = top[_EXTRA]
    elif kind == "identify":
        detail = top[_USER_ID] == ""  # no users row for an empty userId
    elif kind == "group":
        detail = top[_EXTRA] == ""
    own = top[_OWN]
    key = (schema, kind, detail, kinds, tuple(own) if kinds[_OWN] is dict else None)
    recent = _RECENT.get(key)
    if recent is not None:
        for shape in recent:
            values = shape.guard(top)
            if values is not None:
                return shape, values
    # The whole signature: every object's keys and value types.
    signature: list[Any] = [key]
    values = top.copy()
    if kinds[_CONTEXT] is dict:
        _walk(top[_CONTEXT], signature, values, 0)
    if kinds[_OWN] is dict:
        _walk(own, signature, values, 0)
    whole = tuple(signature)
    found = _SHAPES.get(whole, _UNSEEN)
    if found is _UNSEEN:
        if len(_SHAPES) >= SHAPES_LIMIT:
            _SHAPES.clear()
            _RECENT.clear()
        found = _SHAPES[whole] = _compile(event, schema, values)
    if found is None:
        return None
    if recent is None:
        recent = _RECENT[key] = []
    recent.insert(0, found)
    del recent[RECENT_PER_KEY:]
    return found, values


def _walk(obj: dict[Any, Any], signature: list[Any], values: list[Any], depth: int) -> None:
    """Append ``obj``'s keys and value types to ``signature``, its values to ``values``.

    Nested objects follow their parent's values, depth first, as :func:`~.schema.flatten`
    reads them; arrays and objects past ``MAX_DEPTH`` become JSON text, as it keeps them.
    """
    items = list(obj.values())
    kinds = tuple(map(type, items))
    signature.append(tuple(obj))
    signature.append(kinds)
    start = len(values)
    values += items
    if dict in kinds or list in kinds:
        for offset, kind in enumerate(kinds):
            if kind is list or (kind is dict and depth >= MAX_DEPTH):
                values[start + offset] = _json_text(items[offset])
            elif kind is dict:
                _walk(items[offset], signature, values, depth + 1)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Slot:
    """A probe's value: where the event's own value sits in its flat values."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:  # rows_for makes ids text with str(): find them again
        return f"{_MARK}{self.index}"


_MARK = "\x00router-warehouse-slot:"


@dataclass(frozen=True, slots=True)
class _Node:
    """One object of a shape, in the order :func:`_walk` reads them."""

    parent: int | None  # the node whose values hold it; None: the event's top-level values
    offset: int  # its place in those values
    keys: tuple[Any, ...]
    kinds: tuple[type, ...]
    start: int  # where its values begin in the event's flat values
    depth: int


def _nodes(top: list[Any]) -> tuple[list[_Node], list[int]]:
    """The objects :func:`_walk` reads, and the flat positions it turns into JSON text."""
    nodes: list[_Node] = []
    json_positions: list[int] = []
    cursor = len(top)

    def visit(obj: dict[Any, Any], parent: int | None, offset: int, depth: int) -> None:
        nonlocal cursor
        items = list(obj.values())
        node = _Node(parent, offset, tuple(obj), tuple(map(type, items)), cursor, depth)
        number = len(nodes)
        nodes.append(node)
        cursor += len(items)
        for at, kind in enumerate(node.kinds):
            if kind is list or (kind is dict and depth >= MAX_DEPTH):
                json_positions.append(node.start + at)
            elif kind is dict:
                visit(items[at], number, at, depth + 1)

    for index in (_CONTEXT, _OWN):
        if type(top[index]) is dict:
            visit(top[index], None, index, 0)
    return nodes, json_positions


def _guard(nodes: Sequence[_Node], json_positions: Sequence[int]) -> Any:
    """Compile ``guard(top)`` for one shape: its objects checked and read in straight-line
    code, one C-level call per step (what :func:`_walk` does, without its interpretation).

    The generated text holds only numbers and names of its own: keys, types and functions
    are bound through its namespace, so no event data ever becomes code.
    """
    namespace: dict[str, Any] = {"dumps": orjson.dumps}
    lines = ["def guard(top):"]
    for number, node in enumerate(nodes):
        holder = "top" if node.parent is None else f"v{node.parent}"
        namespace[f"K{number}"] = node.keys
        namespace[f"T{number}"] = node.kinds
        lines += [
            f"    n{number} = {holder}[{node.offset}]",
            f"    if tuple(n{number}) != K{number}:",
            "        return None",
            f"    v{number} = list(n{number}.values())",
            f"    if tuple(map(type, v{number})) != T{number}:",
            "        return None",
        ]
    lines.append(f"    out = [{', '.join(['*top', *(f'*v{n}' for n in range(len(nodes)))])}]")
    for position in json_positions:
        lines.append(f"    out[{position}] = dumps(out[{position}]).decode()")
    lines.append("    return out")
    exec(compile("\n".join(lines), "<warehouse shape guard>", "exec"), namespace)  # noqa: S102
    return namespace["guard"]


def _compile(event: Event, schema: str, values: list[Any]) -> EventShape | None:
    kind = values[_TYPE]
    fields = _FIELDS[kind]
    top = values[: len(fields)]
    nodes, json_positions = _nodes(top)
    if any(type(key) is not str for node in nodes for key in node.keys):
        return None  # JSON keys are text; others (1 and True are equal keys) stay exact
    # What the signature holds as a value rather than a type stays as it is in the probe.
    kept = {_TYPE}
    if kind == "track":
        kept.add(_EXTRA)
    elif kind == "identify" and values[_USER_ID] == "":
        kept.add(_USER_ID)
    elif kind == "group" and values[_EXTRA] == "":
        kept.add(_EXTRA)
    probe: dict[str, Any] = {}
    for index, field in enumerate(fields):
        value = values[index]
        if value is not None:
            probe[field] = value if index in kept else _Slot(index)
    cursor = [len(fields)]
    for index in (_CONTEXT, _OWN):
        if type(values[index]) is dict:
            probe[fields[index]] = _placeholders(values[index], cursor, 0)
    if cursor[0] != len(values):
        return None
    try:
        planned = rows_for(probe, schema)
        reference = rows_for(event, schema)
    except Exception:  # noqa: BLE001 - the reference path will say what is wrong, per event
        return None
    constants: list[Any] = []
    plans = []
    for row in planned:
        sources = []
        for value in row.values.values():
            if type(value) is _Slot:
                sources.append(value.index)
            elif type(value) is str and value.startswith(_MARK):
                index = int(value[len(_MARK) :])
                if type(values[index]) is not str:
                    return None  # str() of a number or a boolean: left to the reference path
                sources.append(index)
            else:
                sources.append(len(values) + len(constants))
                constants.append(value)
        plans.append(RowPlan(row.table, tuple(row.values), tuple(sources)))
    shape = EventShape(
        schema,
        tuple(plans),
        tuple(constants),
        tuple(map(type, [*values, *constants])),
        _guard(nodes, json_positions),
    )
    # Cheap insurance: the plan gives this event's reference rows, the guard its values.
    if not _same_rows(shape.rows_of(values), reference) or shape.guard(top) != values:
        return None
    return shape


def _placeholders(obj: dict[Any, Any], cursor: list[int], depth: int) -> dict[Any, Any]:
    """``obj`` with each value replaced by its :class:`_Slot`, numbered as :func:`_walk`
    places them (nested objects after their parent's values, depth first)."""
    start = cursor[0]
    cursor[0] += len(obj)
    probe: dict[Any, Any] = {}
    nested = []
    for offset, (key, value) in enumerate(obj.items()):
        if value is None:
            probe[key] = None
        elif type(value) is dict and depth < MAX_DEPTH:
            probe[key] = None  # filled below, in order, keeping the key's position
            nested.append((key, value))
        else:
            probe[key] = _Slot(start + offset)
    for key, value in nested:
        probe[key] = _placeholders(value, cursor, depth + 1)
    return probe


def _same_rows(ours: Sequence[Row], reference: Sequence[Row]) -> bool:
    def typed(rows: Sequence[Row]) -> list[Any]:
        return [(r.table, [(c, type(v), v) for c, v in r.values.items()]) for r in rows]

    return typed(ours) == typed(reference)


# ---------------------------------------------------------------- a batch


@dataclass(frozen=True, slots=True)
class EventRows:
    """A batch's events as :func:`materialize` takes them: per event, its shape and values,
    or (``shapes[i]`` None) its reference rows in ``reference[i]``."""

    shapes: tuple[EventShape | None, ...]
    values: tuple[list[Any] | None, ...]
    reference: Mapping[int, tuple[Row, ...]]

    def __len__(self) -> int:
        return len(self.shapes)

    def subset(self, positions: Sequence[int]) -> EventRows:
        return EventRows(
            tuple(self.shapes[i] for i in positions),
            tuple(self.values[i] for i in positions),
            {new: rows for new, old in enumerate(positions) if (rows := self.reference.get(old))},
        )

    def rows(self) -> list[tuple[Row, ...]]:
        """Every event's rows, as :func:`~.schema.rows_for` makes them."""
        found = []
        for position, (shape, values) in enumerate(zip(self.shapes, self.values, strict=True)):
            if shape is None or values is None:
                found.append(self.reference[position])
            else:
                found.append(shape.rows_of(values))
        return found

    def schemas(self) -> set[str]:
        found = {shape.schema for shape in set(self.shapes) if shape is not None}
        found.update(row.table.schema for rows in self.reference.values() for row in rows)
        return found

    def tables(self) -> dict[str, int]:
        """Rows per table (``schema.table``)."""
        counts: dict[str, int] = {}
        shapes: dict[EventShape | None, int] = {}
        for shape in self.shapes:
            shapes[shape] = shapes.get(shape, 0) + 1
        for shape, events in shapes.items():
            for plan in () if shape is None else shape.rows:
                name = str(plan.table)
                counts[name] = counts.get(name, 0) + events
        for rows in self.reference.values():
            for row in rows:
                name = str(row.table)
                counts[name] = counts.get(name, 0) + 1
        return counts


def stage(events: Sequence[Event], schemas: Sequence[str]) -> EventRows:
    """``events`` (each in the schema of the same position) as :func:`materialize` takes them.

    Raises what :func:`~.schema.rows_for` raises for an event that is not a call; the plugin
    stages one event at a time instead, to fail only that one.
    """
    builder = EventRowsBuilder()
    for event, schema in zip(events, schemas, strict=True):
        builder.add(event, schema)
    return builder.build()


class EventRowsBuilder:
    """Collects events into :class:`EventRows`, one at a time."""

    __slots__ = ("_reference", "_shapes", "_values")

    def __init__(self) -> None:
        self._shapes: list[EventShape | None] = []
        self._values: list[list[Any] | None] = []
        self._reference: dict[int, tuple[Row, ...]] = {}

    def add(self, event: Event, schema: str) -> None:
        """Add ``event``; ValueError (and nothing added) if it is not one of the calls."""
        observed = observe(event, schema)
        if observed is None:
            rows = rows_for(event, schema)
            self._reference[len(self._shapes)] = rows
            self._shapes.append(None)
            self._values.append(None)
            return
        self._shapes.append(observed[0])
        self._values.append(observed[1])

    def build(self) -> EventRows:
        return EventRows(tuple(self._shapes), tuple(self._values), self._reference)


# ---------------------------------------------------------------- a batch, against the state


def complete(batch: EventRows, state: Mapping[TableRef, Collection[str]]) -> bool:
    """Whether every schema, table and column ``batch`` writes exists in ``state`` (else
    :func:`~.schema.evolve` has DDL to run first)."""
    for schema in batch.schemas():
        if TableRef(schema, DISCARDS) not in state:
            return False
    for shape in set(batch.shapes):
        for plan in () if shape is None else shape.rows:
            columns = state.get(plan.table)
            if columns is None or any(c not in columns for c in plan.columns):
                return False
    for rows in batch.reference.values():
        for row in rows:
            columns = state.get(row.table)
            if columns is None or any(c not in columns for c in row.values):
                return False
    return True


@dataclass(slots=True)
class _Bound:
    """An :class:`EventShape` bound to this batch's columns."""

    #: Appended after the event's values: the constants, a None, the load's ``uuid_ts``.
    tail: list[Any]
    #: (source index, cast): each result is appended after the tail, in this order.
    casts: tuple[tuple[int, Any], ...]
    #: The length of an event's values once the tail and every cast are appended.
    width: int
    #: Per row of a table that exists: (rows by id, gather, None) for an event table, where
    #: ``gather`` picks the row's tuple; (table, None, (id index, ((column, index), ...)))
    #: for ``users``/``accounts``, whose state values are folded.
    targets: tuple[tuple[Any, Any, Any], ...]


def materialize(
    batch: EventRows,
    state: Mapping[TableRef, Mapping[str, ColumnType]],
    uuid_ts: datetime,
) -> Loads:
    """Cast every value to its column's type and group the rows per table: the rows
    :func:`~.schema.materialize` gives for ``batch.rows()``, made per shape (see the module)."""
    rows = Materializer(batch, state, uuid_ts)
    rows.cast(0, len(batch))
    return rows.loads()


class Materializer:
    """:func:`materialize` in steps: bind the batch's shapes, cast its events a slice at a
    time (so a caller may let other work run in between), then take the loads."""

    def __init__(
        self,
        batch: EventRows,
        state: Mapping[TableRef, Mapping[str, ColumnType]],
        uuid_ts: datetime,
    ) -> None:
        self.batch = batch
        distinct = [shape for shape in dict.fromkeys(batch.shapes) if shape is not None]
        incomplete = False
        # Per shape and row: column -> (source index, cast or None), the columns the table has.
        placed: dict[EventShape, list[dict[str, tuple[int, Any]] | None]] = {}
        present: dict[TableRef, set[str]] = {}
        for shape in distinct:
            per_row: list[dict[str, tuple[int, Any]] | None] = []
            for plan in shape.rows:
                columns = state.get(plan.table)
                if columns is None:
                    incomplete = True
                    per_row.append(None)
                    continue
                known: dict[str, tuple[int, Any]] = {}
                for column, source in zip(plan.columns, plan.sources, strict=True):
                    target = columns.get(column)
                    if target is None:
                        incomplete = True
                        continue
                    known[column] = (source, cast_for(shape.kinds[source], target))
                per_row.append(known)
                present.setdefault(plan.table, set()).update(known)
            placed[shape] = per_row
        for rows in batch.reference.values():
            for row in rows:
                columns = state.get(row.table)
                if columns is not None:
                    found = present.setdefault(row.table, set())
                    found.update(c for c in row.values if c in columns)
        names = {
            table: column_order(table, columns, state)
            for table, columns in present.items()
            if table.name not in UPSERTED
        }
        self.typed = TypedRows(state, uuid_ts, names)
        self.typed.incomplete = incomplete
        self.bound = {
            shape: _bind(shape, placed[shape], names, self.typed, uuid_ts) for shape in distinct
        }

    def cast(self, start: int, stop: int) -> None:
        """Cast the events at positions ``start`` to ``stop`` (each event once, in order)."""
        batch, bound = self.batch, self.bound
        add, fold = self.typed.add, self.typed.fold
        for position in range(start, min(stop, len(batch))):
            shape, values = batch.shapes[position], batch.values[position]
            if shape is None or values is None:
                for row in batch.reference[position]:
                    add(row)
                continue
            binding = bound[shape]
            row_values = values + binding.tail
            if binding.casts:
                push = row_values.append
                for source, cast_to in binding.casts:
                    converted = cast_to(row_values[source])
                    if converted is UNCASTABLE:
                        break
                    push(converted)
                if len(row_values) < binding.width:  # a value cannot be cast: the reference
                    for row in shape.rows_of(values):  # path keeps it in discards
                        add(row)
                    continue
            for where, gather, folding in binding.targets:
                if folding is None:  # an event table: ``where`` holds its rows by id
                    found = gather(row_values)
                    if found[0] not in where:  # a duplicate id in one batch: the first stays
                        where[found[0]] = found
                else:  # users/accounts: ``where`` is the table
                    id_index, pairs = folding
                    fold(
                        where,
                        row_values[id_index] if id_index >= 0 else None,
                        {c: row_values[i] for c, i in pairs if row_values[i] is not None},
                    )

    def loads(self) -> Loads:
        return self.typed.loads()


def _bind(
    shape: EventShape,
    per_row: list[dict[str, tuple[int, Any]] | None],
    names: Mapping[TableRef, list[str]],
    typed: TypedRows,
    uuid_ts: datetime,
) -> _Bound:
    size = len(shape.kinds)  # the event's values, then the constants
    none_slot, stamp_slot = size, size + 1
    casts: dict[tuple[int, Any], int] = {}  # (source, cast) -> its slot
    targets: list[tuple[Any, Any, Any]] = []
    for plan, known in zip(shape.rows, per_row, strict=True):
        if known is None:
            continue  # the table does not exist yet
        slots: dict[str, int] = {}
        for column, (source, cast_to) in known.items():
            if cast_to is None:
                slots[column] = source
            else:
                slots[column] = casts.setdefault((source, cast_to), size + 2 + len(casts))
        if plan.table.name in UPSERTED:
            pairs = tuple(slots.items())
            targets.append((plan.table, None, (slots.get("id", -1), pairs)))
            continue
        indexes = [
            stamp_slot if name == "uuid_ts" else slots.get(name, none_slot)
            for name in names[plan.table]
        ]
        rows_by_id = typed.appended.setdefault(plan.table, {})
        targets.append((rows_by_id, operator.itemgetter(*indexes), None))
    return _Bound(
        [*shape.constants, None, uuid_ts], tuple(casts), size + 2 + len(casts), tuple(targets)
    )
