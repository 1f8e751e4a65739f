"""Hostile input for the fuzz suite: requests for the gateway, records for ``events.raw``.

Everything is drawn from hypothesis strategies, so a run is repeatable (derandomized) and a
failing input shrinks. Events are assembled as JSON text, not only as objects, because much
of what clients get wrong cannot be written by a JSON encoder: invalid UTF-8, NaN, duplicate
keys, nesting deeper than the encoder goes, truncated bodies. Strategies are built once at
import and each input takes few draws: generation, not the router, would otherwise be most
of the suite's time.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

import orjson
from hypothesis import strategies as st

WRITE_KEY = "fuzz-key"
UNKNOWN_KEY = "nobody-key"

# ---------------------------------------------------------------- values


def long_text(low: int, high: int) -> st.SearchStrategy[str]:
    """Long strings without drawing each character."""
    return st.builds(lambda n, c: c * n, st.integers(low, high), st.sampled_from('xé😀\\"'))


keys = st.one_of(st.text(max_size=8), long_text(250, 300))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    long_text(100, 2000),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=6,
)
objects = st.dictionaries(keys, values, max_size=4)

CALENDAR_EDGES = [
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999+00:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01",
    "9999-12-31",
    "2026-02-30T00:00:00Z",
    "2026-11-23T25:00:00Z",
    "",
    "now",
]
_OFFSETS = [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12)), None]
timestamps = st.one_of(
    st.sampled_from(CALENDAR_EDGES),
    st.builds(
        lambda moment, offset: (
            moment if offset is None else moment.replace(tzinfo=offset)
        ).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        st.sampled_from(_OFFSETS),
    ),
    st.just("2026-11-23T10:00:00.000Z"),
    values,
)
ids = st.one_of(
    st.text(max_size=12),
    st.just(""),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    long_text(100, 120),
)
TYPES = ["track", "identify", "page", "screen", "group", "alias", "Track", "PAGE", "login", ""]
# The fields an event may have, with what each may hold: usually plausible, sometimes not.
FIELDS: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("type", st.one_of(st.sampled_from(TYPES), values)),
    ("userId", st.one_of(st.just("u1"), ids)),
    ("anonymousId", st.one_of(st.just("a1"), ids)),
    ("event", st.one_of(st.just("Clicked"), st.text(max_size=10), long_text(250, 260))),
    ("name", st.one_of(st.just("Home"), values)),
    ("groupId", ids),
    ("previousId", ids),
    ("messageId", ids),
    ("properties", st.one_of(objects, values)),
    ("traits", objects),
    ("context", st.one_of(objects, values)),
    ("integrations", st.dictionaries(st.sampled_from(["All", "Sink", "all"]), values)),
    ("timestamp", timestamps),
    ("sentAt", timestamps),
    ("originalTimestamp", timestamps),
    ("receivedAt", timestamps),
]
# Which fields an event has: usually a type and an identity, then a few of the others.
_CORE = st.sampled_from([(0, 1), (0, 2), (0, 1, 2), (0, 1), (1,), (0,), ()])
_MORE = st.lists(st.integers(3, len(FIELDS) - 1), max_size=5)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """An event-shaped object: usually close to valid, each field sometimes hostile."""
    event: dict[str, Any] = {}
    for index in sorted({*draw(_CORE), *draw(_MORE)}):
        name, choice = FIELDS[index]
        event[name] = draw(choice)
    return event


# ---------------------------------------------------------------- JSON text


def dumps(value: Any) -> bytes:
    """JSON text of a generated value; the standard library writes integers of any size."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def deep_json(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


_MUTATION = st.integers(0, 24)  # 0-8 damage the text, the rest leave it as encoded
_BAD_BYTES = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
_LITERALS = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"01"])
_DUPLICATED = st.sampled_from([b"type", b"userId", b"event", b"messageId"])
_LEVELS = st.sampled_from([40, 63, 64, 65, 200, 253, 254, 255, 300, 1023, 1100])
_OBJECT_FIELDS = st.sampled_from([b"properties", b"context", b"traits", b"integrations"])
_BLOB_SIZES = st.sampled_from([20_000, 32_700, 33_000, 40_000, 70_000])
_NOT_OBJECTS = st.sampled_from([b"", b"null", b"[]", b"[1,2]", b'"x"', b"{", b"}", b"0"])
_POSITIONS = st.integers(0, 10_000)


@st.composite
def hostile_json(draw: st.DrawFn, event: dict[str, Any]) -> bytes:
    """The event as JSON text, maybe damaged in a way an encoder would never write."""
    data = dumps(event)
    mutation = draw(_MUTATION)
    is_object = data.startswith(b"{") and len(data) > 2
    if mutation == 0:
        return data[: draw(_POSITIONS) % max(1, len(data))]  # truncated
    if mutation == 1:
        at = draw(_POSITIONS) % (len(data) + 1)
        return data[:at] + draw(_BAD_BYTES) + data[at:]  # invalid UTF-8
    if mutation == 2 and is_object:
        return b'{"properties":{"x":' + draw(_LITERALS) + b"}," + data[1:]
    if mutation == 3 and is_object:
        return b'{"' + draw(_DUPLICATED) + b'":5,' + data[1:]  # a duplicate key: the last wins
    if mutation == 4 and is_object:
        nested = deep_json(draw(_LEVELS))
        return b'{"' + draw(_OBJECT_FIELDS) + b'":' + nested + b"," + data[1:]
    if mutation == 5 and is_object:
        return b'{"properties":{"blob":"' + b"x" * draw(_BLOB_SIZES) + b'"},' + data[1:]
    if mutation == 6:
        return b"\xef\xbb\xbf" + data  # a byte order mark
    if mutation == 7:
        return draw(_NOT_OBJECTS)
    if mutation == 8:
        return draw(st.binary(max_size=64))
    return data


# ---------------------------------------------------------------- HTTP


def encode(body: bytes, encoding: int) -> bytes:
    """0: as is; 1: gzip; 2: truncated gzip; 3: labelled gzip but not; 4: a gzip bomb;
    5, 6: encodings the gateway does not take."""
    if encoding == 1:
        return gzip.compress(body, compresslevel=1)
    if encoding == 2:
        return gzip.compress(body, compresslevel=1)[:-6]
    if encoding == 4:
        return gzip_bomb()
    return body


@cache
def gzip_bomb() -> bytes:
    """20 MB of spaces in 20 KB: the gateway must stop inflating at its limit."""
    return gzip.compress(b" " * 20_000_000, compresslevel=9)


@dataclass(frozen=True)
class Request:
    """A request to send; a batch's items are kept apart so the test can add its neighbour."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    #: For a batch: the envelope's JSON up to the items (``{"sentAt":...,``) and the items.
    batch_head: bytes | None = None
    batch_items: tuple[bytes, ...] = ()
    #: The envelope has ``integrations``, which may turn destinations off for every item.
    routes_off: bool = False
    neighbour_at: int = 0
    encoding: int = 0  # see encode()

    def materialize(self, neighbour: bytes | None) -> tuple[bytes, int, int | None]:
        """(body as sent, items in the batch, index of the neighbour or None)."""
        if self.batch_head is None:
            return encode(self.body, self.encoding), 0, None
        items = list(self.batch_items)
        at = None
        if neighbour is not None:
            at = min(self.neighbour_at, len(items))
            items.insert(at, neighbour)
        body = self.batch_head + b'"batch":[' + b",".join(items) + b"]}"
        return encode(body, self.encoding), len(items), at


SINGLE_PATHS = ["/v1/track", "/v1/t", "/v1/identify", "/v1/i", "/v1/page", "/v1/p", "/v1/screen"]
SINGLE_PATHS += ["/v1/s", "/v1/group", "/v1/g", "/v1/alias", "/v1/a"]
BATCH_PATHS = ["/v1/batch", "/v1/import", "/v1/b"]
OTHER_PATHS = ["/v1/m", "/v1/nowhere", "/", f"/v1/projects/{WRITE_KEY}/settings"]
ENCODINGS = {1: "gzip", 2: "gzip", 3: "gzip", 4: "gzip", 5: "br", 6: "deflate"}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


# (headers, whether a writeKey goes in the body): mostly right, sometimes not.
_AUTH = st.sampled_from(
    [
        ({"Authorization": basic(WRITE_KEY)}, False),
        ({"Authorization": basic(WRITE_KEY)}, False),
        ({"Authorization": basic(WRITE_KEY)}, False),
        ({"X-Write-Key": WRITE_KEY}, False),
        ({}, True),
        ({"Authorization": basic(UNKNOWN_KEY)}, False),
        ({"Authorization": "Basic %%%not base64"}, False),
        ({}, False),
    ]
)
_BODY_KEYS = st.one_of(st.just(WRITE_KEY), st.just(UNKNOWN_KEY), ids)
_CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "", "x/y"])
_ENCODING = st.integers(0, 29)
_METHOD = st.sampled_from(["POST"] * 19 + ["GET", "PUT", "DELETE", "OPTIONS"])
_KIND = st.integers(0, 9)  # 0-4 a single call, 5-8 a batch, 9 another path
_SINGLE_PATHS = st.sampled_from(SINGLE_PATHS)
_BATCH_PATHS = st.sampled_from(BATCH_PATHS)
_OTHER_PATHS = st.sampled_from(OTHER_PATHS)
_HUGE = st.integers(0, 399).map(lambda n: n == 217)  # about one batch in 400
_HUGE_SIZES = st.sampled_from([2499, 2500])  # with the neighbour: 2,500 and 2,501 items
_ITEMS = st.lists(events(), max_size=4)
_ENVELOPE = st.fixed_dictionaries(
    {}, optional={"context": values, "integrations": values, "sentAt": timestamps}
)
_BAD_HEADS = st.sampled_from([b'{"batch":5,', b"{", b'{"batch":[1],', b'{"context":[],'])
_ONE_IN_TWENTY = st.integers(0, 19).map(lambda n: n == 7)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    auth, key_in_body = draw(_AUTH)
    headers = dict(auth)
    if content_type := draw(_CONTENT_TYPES):
        headers["Content-Type"] = content_type
    encoding = draw(_ENCODING)
    if encoding in ENCODINGS:
        headers["Content-Encoding"] = ENCODINGS[encoding]
    else:
        encoding = 0
    method = draw(_METHOD)
    kind = draw(_KIND)
    if kind < 5 or kind == 9:
        path = draw(_SINGLE_PATHS if kind < 5 else _OTHER_PATHS)
        if path.endswith("/settings"):
            method = "GET"
        event = draw(events())
        if key_in_body:
            event["writeKey"] = draw(_BODY_KEYS)
        body = draw(hostile_json(event))
        if draw(_ONE_IN_TWENTY):
            body = draw(hostile_json({"batch": draw(values)}))  # a batch body sent as one call
        return Request(method, path, headers, body, encoding=encoding)
    if draw(_HUGE):
        template = orjson.dumps({"type": "track", "userId": "u-huge", "event": "Huge"})
        items = (template,) * draw(_HUGE_SIZES)  # no messageId: the gateway sets one each
    else:
        items = tuple(draw(hostile_json(e)) for e in draw(_ITEMS))
    envelope = draw(_ENVELOPE)
    if key_in_body:
        envelope["writeKey"] = draw(_BODY_KEYS)
    head = dumps(envelope)[:-1] + (b"," if envelope else b"")
    if draw(_ONE_IN_TWENTY):
        head = draw(_BAD_HEADS)
    return Request(
        method,
        draw(_BATCH_PATHS),
        headers,
        batch_head=head,
        batch_items=items,
        routes_off="integrations" in envelope,
        neighbour_at=draw(st.integers(0, len(items))),
        encoding=encoding,
    )


# ---------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class KafkaRecord:
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None


# (header write key or None, writeKey in the body or None)
_RECORD_KEYS = st.sampled_from(
    [
        (WRITE_KEY.encode(), None),
        (WRITE_KEY.encode(), None),
        (WRITE_KEY.encode(), None),
        (None, WRITE_KEY),
        (None, None),
        (b"", None),
        (b"\xff\xfe", None),
        (UNKNOWN_KEY.encode(), None),
        (None, 5),
    ]
)
_SENT_BYTES = st.sampled_from(
    [None, None, None, b"", b"abc", b"-1", b"10", b"40000", b"99999999999999999999"]
)
_RECORD_TIMESTAMPS = st.sampled_from(
    [
        None,
        None,
        0,
        -62_135_596_800_001,  # before year 1
        253_402_300_800_000,  # year 10000
        2**63 - 1,
        1_795_000_000_000,
    ]
)
_RECORD_KEYS_BYTES = st.one_of(st.none(), st.binary(max_size=12), st.just(b"u1"))
_TOMBSTONE = st.integers(0, 49).map(lambda n: n == 31)


@st.composite
def kafka_records(draw: st.DrawFn) -> KafkaRecord:
    event = draw(events())
    header_key, body_key = draw(_RECORD_KEYS)
    headers: list[tuple[str, bytes]] = []
    if header_key is not None:
        headers.append(("write-key", header_key))
    if body_key is not None:
        event["writeKey"] = body_key
    if (sent := draw(_SENT_BYTES)) is not None:
        headers.append(("sent-bytes", sent))
    value: bytes | None = draw(hostile_json(event))
    key = draw(_RECORD_KEYS_BYTES)
    if draw(_TOMBSTONE):
        value, key = None, key or b"tombstone"  # a tombstone needs a key
    return KafkaRecord(value, key, headers, draw(_RECORD_TIMESTAMPS))
