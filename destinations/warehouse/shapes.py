"""Events -> typed rows through one compiled function per event shape: the load's fast path.

Which rows an event adds, which column each value lands in and which cast it needs depend
only on the event's *shape*: its call type (and track event name), the keys of its context
and properties or traits at every level, and the Python type of every value. So that work is
done once per shape, not once per value.

A new shape (found by its signature, :func:`_signature`) gets a plan: the reference code,
:func:`~.schema.rows_for`, runs on a probe, the event with every value replaced by a
placeholder naming its place; where each placeholder lands is where that value goes
(:class:`RowPlan`). The plan is checked against the reference rows of the event it was made
from; a shape whose plan would differ takes the reference path (none is known: cheap
insurance, as are the other refusals below).

Bound to the tables' current columns, a shape is compiled into one function
(:func:`_emitter_factory`) that, for an event, checks that its objects have exactly the
shape's keys and value types, reads its values, casts what needs a cast and puts each row
in place: no dict per row, no per-row signature, one pass. Events are matched to shapes by
their top level (call type, name, top-level value types, the keys of the own object): the
shapes last seen there are tried in turn, and only when none fits is the whole signature
made. An event with a value that cannot be cast goes through the reference path
(:meth:`~.schema.TypedRows.add`), which keeps the value in ``discards``.

The generated code holds only numbers and names of its own: keys, types, constants and
functions are bound through its namespace, so no event data ever becomes code.

Both paths give the same rows (``tests/destinations/warehouse/test_shapes.py`` checks it over
generated events).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import NoneType
from typing import Any

import orjson

from destinations.warehouse.schema import (
    CASTS,
    INT64_MAX,
    INT64_MIN,
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
#: event's top-level values: the common ones, then the object of the type's own columns
#: (always at :data:`_OWN`), then what else the type reads.
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
#: path. Bounded: past the limit every cache here starts over (a few events are compiled
#: again) rather than grow.
_SHAPES: dict[tuple[Any, ...], EventShape | None] = {}
SHAPES_LIMIT = 4096
#: The shapes last seen under each top level, most recent first: tried before the whole
#: signature is made.
_RECENT: dict[tuple[Any, ...], list[EventShape]] = {}
RECENT_PER_KEY = 3
#: Compiled functions, by shape and the columns they were bound to.
_EMITTERS: dict[tuple[Any, ...], Any] = {}
_UNSEEN: Any = object()
_TO_INTEGER = CASTS[ColumnType.INTEGER]


@dataclass(frozen=True, slots=True)
class RowPlan:
    """One row an event of a shape adds: its table, and where each column's value comes from."""

    table: TableRef
    columns: tuple[str, ...]  # in the reference row's order
    sources: tuple[int, ...]  # per column: an index into the event's values + the constants


@dataclass(frozen=True, slots=True)
class _Node:
    """One object of a shape, in the order :func:`_walk` reads them."""

    parent: int | None  # the node whose values hold it; None: the event's top-level values
    offset: int  # its place in those values
    keys: tuple[Any, ...]
    kinds: tuple[type, ...]
    start: int  # where its values begin in the event's flat values
    depth: int


@dataclass(frozen=True, slots=True, eq=False)
class EventShape:
    """The plan of one event shape (compared and hashed by identity).

    An event's *flat values* are its top-level values (:data:`_FIELDS`), then each object's
    values in the order :func:`_walk` reads them; the shape's constants follow them.
    """

    schema: str
    rows: tuple[RowPlan, ...]
    #: Values every event of the shape gives alike (``tracks.event``, ``event_text`` ...).
    constants: tuple[Any, ...]
    #: The Python type of each flat value (arrays: text) and constant: what decides a cast.
    kinds: tuple[type, ...]
    top_size: int
    nodes: tuple[_Node, ...]
    #: Flat positions of arrays and too-deep objects, kept as JSON text.
    json_positions: frozenset[int] = field(default_factory=frozenset)
    #: Two keys name one column (``accountType`` and ``account_type``): the later in the
    #: object wins, so an event of this shape must have its keys in this shape's order.
    order_matters: bool = False


# ---------------------------------------------------------------- shapes


def _signature(
    key: tuple[Any, ...], top: list[Any], kinds: tuple[type, ...]
) -> tuple[tuple[Any, ...], list[Any]]:
    """The whole signature (every object's keys and value types) and the flat values."""
    signature: list[Any] = [key]
    values = top.copy()
    if kinds[_CONTEXT] is dict:
        _walk(top[_CONTEXT], signature, values, 0)
    if kinds[_OWN] is dict:
        _walk(top[_OWN], signature, values, 0)
    return tuple(signature), values


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


def _shape_of(
    key: tuple[Any, ...], event: Event, schema: str, top: list[Any], kinds: tuple[type, ...]
) -> EventShape | None:
    """The shape of ``event`` by its whole signature (compiled if new); it becomes the first
    shape tried for events of the same top level."""
    whole, values = _signature(key, top, kinds)
    found: EventShape | None = _SHAPES.get(whole, _UNSEEN)
    if found is _UNSEEN:
        if len(_SHAPES) >= SHAPES_LIMIT:
            _SHAPES.clear()
            _RECENT.clear()
            _EMITTERS.clear()
        found = _SHAPES[whole] = _compile(event, schema, values, len(top))
    if found is not None:
        recent = _RECENT.setdefault(key, [])
        recent.insert(0, found)
        del recent[RECENT_PER_KEY:]
    return found


class _Slot:
    """A probe's value: where the event's own value sits in its flat values."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:  # rows_for makes ids text with str(): find them again
        return f"{_MARK}{self.index}"


_MARK = "\x00router-warehouse-slot:"


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


def _compile(event: Event, schema: str, values: list[Any], top_size: int) -> EventShape | None:
    kind = values[_TYPE]
    fields = _FIELDS[kind]
    top = values[:top_size]
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
    for index, name in enumerate(fields):
        value = values[index]
        if value is not None:
            probe[name] = value if index in kept else _Slot(index)
    cursor = [top_size]
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
    # Where two keys name one column, which value wins depends on their order: the plan
    # made with every object's keys reversed then differs.
    reversed_probe = {**probe}
    for index in (_CONTEXT, _OWN):
        if type(values[index]) is dict:
            reversed_probe[fields[index]] = _reversed(probe[fields[index]])
    # (Compared as mappings: the order of a row's columns is the table's, not the event's.)
    order_matters = [(row.table, dict(row.values)) for row in rows_for(reversed_probe, schema)] != [
        (row.table, dict(row.values)) for row in planned
    ]
    shape = EventShape(
        schema,
        tuple(plans),
        tuple(constants),
        tuple(map(type, [*values, *constants])),
        top_size,
        tuple(nodes),
        frozenset(json_positions),
        order_matters,
    )
    # Cheap insurance: the plan gives this event's reference rows.
    return shape if _same_rows(_rows_of(shape, values), reference) else None


def _reversed(obj: dict[Any, Any]) -> dict[Any, Any]:
    """``obj`` (a probe's object) with the keys of every object in reverse order."""
    return {k: _reversed(v) if type(v) is dict else v for k, v in reversed(obj.items())}


def _rows_of(shape: EventShape, values: Sequence[Any]) -> tuple[Row, ...]:
    every = [*values, *shape.constants]
    return tuple(
        Row(plan.table, {c: every[s] for c, s in zip(plan.columns, plan.sources, strict=True)})
        for plan in shape.rows
    )


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


def materialize(
    events: Sequence[Event],
    schemas: Sequence[str],
    state: Mapping[TableRef, Mapping[str, ColumnType]],
    uuid_ts: datetime,
) -> Loads:
    """Cast every value to its column's type and group the rows per table: the rows
    :func:`~.schema.materialize` gives for the events' :func:`~.schema.rows_for` (each in
    the schema of the same position). ValueError for an event that is not a call."""
    rows = Materializer(state, uuid_ts)
    rows.add(events, schemas)
    return rows.loads()


class Materializer:
    """:func:`materialize` in steps: add events a slice at a time (so a caller may let other
    work run in between), then take the loads."""

    def __init__(
        self, state: Mapping[TableRef, Mapping[str, ColumnType]], uuid_ts: datetime
    ) -> None:
        self.state = state
        self.typed = TypedRows(state, uuid_ts)
        #: This batch's function per shape tried, and what to note once the shape is used:
        #: whether its rows lack a table or a column, and each event table's columns.
        self._bound: dict[EventShape, Callable[[list[Any]], bool | None]] = {}
        self._bindings: dict[EventShape, tuple[bool, tuple[tuple[TableRef, Any], ...]]] = {}
        self._used: set[EventShape] = set()
        #: Per top level, the function that took an event of it last.
        self._last: dict[tuple[Any, ...], Callable[[list[Any]], bool | None]] = {}
        #: Events that went through the reference path: no plan for their shape, or a value
        #: that cannot be cast.
        self.unplanned = 0
        self.uncastable = 0

    def add(self, events: Sequence[Event], schemas: Sequence[str]) -> None:
        """Add each event's rows (in the schema of the same position), in order."""
        bound, used, last = self._bound, self._used, self._last
        recent_of, fields_of = _RECENT, _FIELDS
        add = self.typed.add
        for event, schema in zip(events, schemas, strict=True):
            kind = event.get("type")
            fields = fields_of.get(kind) if type(kind) is str else None
            if fields is None:
                self.unplanned += 1
                for row in rows_for(event, schema):  # ValueError: not a call
                    add(row)
                continue
            top: list[Any] = list(map(event.get, fields))
            detail: Any = None
            if kind == "track":
                if type(top[_EXTRA]) not in _NAME_KINDS:
                    self.unplanned += 1
                    for row in rows_for(event, schema):
                        add(row)
                    continue
                detail = top[_EXTRA]
            elif kind == "identify":
                detail = top[_USER_ID] == ""  # no users row for an empty userId
            elif kind == "group":
                detail = top[_EXTRA] == ""
            # The function that took an event of this type (and name) last in this batch,
            # then the shapes last seen with this top level, then the whole signature.
            brief = (schema, kind, detail)
            emit = last.get(brief)
            done = None if emit is None else emit(top)
            if done is None:
                kinds = tuple(map(type, top))
                own = top[_OWN]
                key = (schema, kind, detail, kinds, tuple(own) if kinds[_OWN] is dict else None)
                shape: EventShape | None = None
                for shape in recent_of.get(key, ()):
                    emit = bound.get(shape) or self._bind(shape)
                    done = emit(top)
                    if done is not None:
                        break
                else:
                    shape = _shape_of(key, event, schema, top, kinds)
                    if shape is not None:
                        emit = bound.get(shape) or self._bind(shape)
                        done = emit(top)
                if done is None or shape is None or emit is None:  # no plan for this shape
                    self.unplanned += 1
                    for row in rows_for(event, schema):
                        add(row)
                    continue
                used.add(shape)
                last[brief] = emit
            if not done:  # a value cannot be cast: the reference path keeps it in discards
                self.uncastable += 1
                for row in rows_for(event, schema):
                    add(row)

    def _bind(self, shape: EventShape) -> Callable[[list[Any]], bool | None]:
        """The shape's function for this batch, bound to the tables' current columns."""
        state, typed = self.state, self.typed
        incomplete = False
        targets: list[tuple[TableRef, tuple[Any, ...], tuple[str, ...] | None]] = []
        for plan in shape.rows:
            columns = state.get(plan.table)
            if columns is None:
                incomplete = True  # the table does not exist yet: its rows are left out
                continue
            placed = []
            for column, source in zip(plan.columns, plan.sources, strict=True):
                target = columns.get(column)
                if target is None:
                    incomplete = True
                    continue
                placed.append((column, source, cast_for(shape.kinds[source], target)))
            order = None
            if plan.table.name not in UPSERTED:
                known = [column for column, _, _ in placed]
                order = tuple(column_order(plan.table, known, state))
            targets.append((plan.table, tuple(placed), order))
        layout = tuple(targets)
        factory = _EMITTERS.get((shape, layout))
        if factory is None:
            if len(_EMITTERS) >= SHAPES_LIMIT:
                _EMITTERS.clear()  # columns changed often: compile again what is still used
            factory = _EMITTERS[(shape, layout)] = _emitter_factory(shape, layout)
        arguments: list[Any] = [typed.fold]
        for table, _, order in layout:
            if order is None:
                arguments.append(table)
            else:
                arguments += [typed.appended.setdefault(table, {}), typed.stamp(table, order)]
        emit: Callable[[list[Any]], bool | None] = factory(*arguments)
        self._bound[shape] = emit
        self._bindings[shape] = (incomplete, tuple((t, o) for t, _, o in layout if o))
        return emit

    def loads(self) -> Loads:
        typed = self.typed
        for shape in self._used:
            incomplete, orders = self._bindings[shape]
            typed.incomplete = typed.incomplete or incomplete
            for table, order in orders:
                typed.present(table, order)
        return typed.loads()


def _emitter_factory(shape: EventShape, layout: tuple[Any, ...]) -> Any:
    """Compile ``make(fold, *where) -> emit`` for one shape bound to the columns.

    ``layout`` holds, per row of a table that exists: the table, its known columns as
    (column, flat source index, cast or None), and for an event table its columns in the
    order its rows are made (``users``/``accounts``, whose rows are folded, have None).
    ``make`` takes :meth:`~.schema.TypedRows.fold`, then per event table its rows by id and
    the ``uuid_ts`` its rows end with, per state table the table.

    ``emit(top)`` takes the event's top-level values (:data:`_FIELDS` of its call type) and
    returns None if the event is not of this shape (value types, every object's keys, in
    order where :attr:`EventShape.order_matters`); False if a value cannot be cast (nothing
    is put);
    else True, each row put in place: an event table's tuple under its id unless the batch
    has that id already, a state row folded.
    """
    namespace: dict[str, Any] = {"dumps": orjson.dumps, "UNCASTABLE": UNCASTABLE}
    body: list[str] = []
    names: dict[int, str] = {}  # flat position -> the local holding it

    def constant(value: Any) -> str:
        name = f"k{len(namespace)}"
        namespace[name] = value
        return name

    def type_checks(values: Sequence[str], kinds: Sequence[type], indent: str) -> list[str]:
        checks = " or ".join(
            f"type({value}) is not {constant(kind)}"
            for value, kind in zip(values, kinds, strict=True)
        )
        return [f"{indent}if {checks}:", f"{indent}    return None"] if checks else []

    top_names = [f"t{i}" for i in range(shape.top_size)]
    body.append(f"        {', '.join(top_names)}, = top")
    names.update(enumerate(top_names))
    # The call type is what found this function; every other top-level value's type is
    # checked (a track named 1 and one named True share a name in a dict, not a table).
    body += type_checks(top_names[1:], shape.kinds[1 : shape.top_size], "        ")
    reads: list[str] = []  # inside ``try``: a key the event lacks is a KeyError
    for node in shape.nodes:
        holder = (
            top_names[node.offset]
            if node.parent is None
            else names[shape.nodes[node.parent].start + node.offset]
        )
        values = [f"v{node.start + offset}" for offset in range(len(node.keys))]
        for offset, value in enumerate(values):
            names[node.start + offset] = value
        if shape.order_matters:
            reads += [
                f"            if tuple({holder}) != {constant(node.keys)}:",
                "                return None",
            ]
            if values:
                reads.append(f"            {', '.join(values)}, = {holder}.values()")
        else:
            # The same number of keys, each of them there: the same keys, in any order.
            reads += [
                f"            if len({holder}) != {len(node.keys)}:",
                "                return None",
            ]
            reads += [
                f"            {value} = {holder}[{constant(key)}]"
                for value, key in zip(values, node.keys, strict=True)
            ]
        reads += type_checks(values, node.kinds, "            ")
    if reads:
        body += ["        try:", *reads, "        except KeyError:", "            return None"]
    for position in sorted(shape.json_positions):
        body.append(f"        {names[position]} = dumps({names[position]}).decode()")

    casts: dict[tuple[int, Any], str] = {}
    values_count = len(shape.kinds) - len(shape.constants)

    def expression(source: int, cast_to: Any) -> str:
        raw = (
            names[source]
            if source < values_count
            else constant(shape.constants[source - values_count])
        )
        if cast_to is None:
            return raw
        found = casts.get((source, cast_to))
        if found is None:
            if cast_to is _TO_INTEGER and shape.kinds[source] is int:
                # An integer into an integer column: only its range is checked (inline).
                found = casts[(source, cast_to)] = raw
                body.extend(
                    [
                        f"        if not {INT64_MIN} <= {raw} <= {INT64_MAX}:",
                        "            return False",
                    ]
                )
                return found
            found = casts[(source, cast_to)] = f"c{len(casts)}"
            body.extend(
                [
                    f"        {found} = {constant(cast_to)}({raw})",
                    f"        if {found} is UNCASTABLE:",
                    "            return False",
                ]
            )
        return found

    emits: list[str] = []
    arguments = ["fold"]
    for number, (_, placed, order) in enumerate(layout):
        found = {column: expression(source, cast_to) for column, source, cast_to in placed}
        if order is None:
            arguments.append(f"table{number}")
            pairs = ", ".join(f"{constant(column)}: {found[column]}" for column in found)
            emits.append(f"        fold(table{number}, {found.get('id', 'None')}, {{{pairs}}})")
            continue
        arguments += [f"rows{number}", f"stamp{number}"]
        items = [f"stamp{number}" if c == "uuid_ts" else found.get(c, "None") for c in order]
        emits += [
            f"        row = ({', '.join(items)},)",
            f"        if row[0] not in rows{number}:",
            f"            rows{number}[row[0]] = row",
        ]
    lines = [
        f"def make({', '.join(arguments)}):",
        "    def emit(top):",
        *body,
        *emits,
        "        return True",
        "    return emit",
    ]
    exec(compile("\n".join(lines), "<warehouse shape>", "exec"), namespace)  # noqa: S102
    return namespace["make"]
