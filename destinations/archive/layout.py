"""Where an archived event goes, what a file is called, and what its manifest says.

Layout under the root (a directory, or a bucket plus prefix)::

    source=<source id>/date=YYYY-MM-DD/hour=HH/<first>-<digest>.jsonl.gz      the events
    _manifests/source=<source id>/date=YYYY-MM-DD/hour=HH/<first>-<digest>.json
    _tmp/                                                 files being written (local only)

- Partitions are Hive-style (``key=value``) from the event's ``receivedAt`` in UTC (the
  router's clock, set on every event), falling back to ``timestamp``; an event with neither
  goes to ``date=__HIVE_DEFAULT_PARTITION__/hour=__HIVE_DEFAULT_PARTITION__`` (Hive's name for
  a missing partition value). Query engines skip ``_``-prefixed paths, so they read only the
  data files.
- ``<first>`` is the earliest ``receivedAt`` in the file (``20261123T100000123Z``), so names
  sort by time; ``<digest>`` is the first 16 hex digits of SHA-256 over the file's messageIds
  in order. The same events in the same order always get the same name: a batch written again
  after a crash replaces its own file instead of adding a second one.
- A file counts once its manifest exists. The manifest is written after the data file; a data
  file without one was cut short by a crash before its events were acknowledged, and those
  events are written again (see :mod:`destinations.archive.reader`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from router.spec import InvalidEvent, format_timestamp, parse_timestamp

DATA_SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".json"
MANIFESTS = "_manifests"
TMP = "_tmp"
#: Hive's value for a partition whose column is null.
MISSING = "__HIVE_DEFAULT_PARTITION__"
MANIFEST_VERSION = 1


#: The form the router writes timestamps in (UTC, milliseconds): sliced without parsing.
_CANONICAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def event_time(event: dict[str, Any]) -> str | None:
    """``receivedAt``, else ``timestamp``, as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC.

    None if neither is a readable timestamp. Strings in this form sort in time order.
    """
    for field in ("receivedAt", "timestamp"):
        value = event.get(field)
        if not isinstance(value, str):
            continue
        if _CANONICAL.match(value):
            return value  # the router's own stamps: no parsing on the hot path
        try:
            return format_timestamp(parse_timestamp(value, field))
        except InvalidEvent:
            continue
    return None


def partition(source: str, moment: str | None) -> str:
    """``source=<id>/date=YYYY-MM-DD/hour=HH`` for a time from :func:`event_time`."""
    if moment is None:
        return f"source={source}/date={MISSING}/hour={MISSING}"
    return f"source={source}/date={moment[:10]}/hour={moment[11:13]}"


def file_stem(first: str | None, message_ids: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(message_ids).encode()).hexdigest()[:16]
    if first is None:
        return f"unknown-{digest}"
    compact = first[:4] + first[5:7] + first[8:10] + "T" + first[11:13] + first[14:16]
    return f"{compact}{first[17:19]}{first[20:23]}Z-{digest}"


def data_key(partition_path: str, stem: str) -> str:
    return f"{partition_path}/{stem}{DATA_SUFFIX}"


def manifest_key(partition_path: str, stem: str) -> str:
    return f"{MANIFESTS}/{partition_path}/{stem}{MANIFEST_SUFFIX}"


def data_key_of_manifest(key: str) -> str:
    """``_manifests/<p>/<stem>.json`` -> ``<p>/<stem>.jsonl.gz``."""
    inner = key.removeprefix(f"{MANIFESTS}/").removesuffix(MANIFEST_SUFFIX)
    return inner + DATA_SUFFIX


def line_id(event: dict[str, Any], line: bytes) -> str:
    """What identifies an archived event: its messageId, else a digest of its line."""
    value = event.get("messageId")
    if isinstance(value, str) and value:
        return value
    return "sha256-" + hashlib.sha256(line.rstrip(b"\n")).hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a reader needs to trust a file and to drop events it already read elsewhere.

    ``message_ids[i]`` identifies line ``i`` of the data file (see :func:`line_id`);
    ``sha256`` and ``size`` (``bytes`` in JSON) are of the compressed file as stored.
    """

    file: str
    source: str
    destination: str
    events: int
    size: int
    uncompressed_bytes: int
    sha256: str
    first_received_at: str | None
    last_received_at: str | None
    written_at: str
    message_ids: tuple[str, ...]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": MANIFEST_VERSION,
                "file": self.file,
                "source": self.source,
                "destination": self.destination,
                "events": self.events,
                "bytes": self.size,
                "uncompressedBytes": self.uncompressed_bytes,
                "sha256": self.sha256,
                "firstReceivedAt": self.first_received_at,
                "lastReceivedAt": self.last_received_at,
                "writtenAt": self.written_at,
                "messageIds": list(self.message_ids),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = orjson.loads(data)
        if not isinstance(body, dict) or body.get("version") != MANIFEST_VERSION:
            raise ValueError("not an archive manifest of a version this reader knows")
        return cls(
            file=body["file"],
            source=body["source"],
            destination=body["destination"],
            events=body["events"],
            size=body["bytes"],
            uncompressed_bytes=body["uncompressedBytes"],
            sha256=body["sha256"],
            first_received_at=body["firstReceivedAt"],
            last_received_at=body["lastReceivedAt"],
            written_at=body["writtenAt"],
            message_ids=tuple(body["messageIds"]),
        )
