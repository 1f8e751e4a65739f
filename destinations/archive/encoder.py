"""A batch of events -> the files it makes: one or more per partition (pure).

Events keep their batch order inside a file. A partition's events are cut into several files
when their JSON lines exceed ``max_file_bytes`` (a single larger event gets a file of its
own). Compression happens when the file is written, off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from destinations.archive import layout
from destinations.base import DestinationError, Encoded, EncodeError, Event, raw_events


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One file to write: its place, its JSON lines and the batch positions they carry."""

    partition: str
    stem: str
    source: str
    lines: bytes
    message_ids: tuple[str, ...]
    covers: tuple[int, ...]
    first_received_at: str | None
    last_received_at: str | None

    @property
    def data_key(self) -> str:
        return layout.data_key(self.partition, self.stem)

    @property
    def manifest_key(self) -> str:
        return layout.manifest_key(self.partition, self.stem)


@dataclass(slots=True)
class _Open:
    """A file being filled while encoding."""

    partition: str
    lines: list[bytes]
    ids: list[str]
    covers: list[int]
    first: str | None = None
    last: str | None = None
    size: int = 0


class ArchiveEncoder:
    def __init__(self, *, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes

    def encode(self, events: Sequence[Event], sources: Sequence[str]) -> Encoded[ArchiveFile]:
        """``sources[i]`` is the source of ``events[i]``."""
        failed: dict[int, DestinationError] = {}
        files: list[ArchiveFile] = []
        open_files: dict[str, _Open] = {}
        # One partition string per (source, hour), not one formatted per event.
        partitions: dict[tuple[str, str | None], str] = {}
        # The bytes read from dest.<id>, when the lane passed them: not serialized again
        # (unless they span lines: a JSON line must not).
        raw = raw_events(events)
        for position, (event, source) in enumerate(zip(events, sources, strict=True)):
            given = raw[position] if raw is not None else None
            if given is not None and b"\n" not in given and b"\r" not in given:
                line = given + b"\n"
            else:
                try:
                    line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
                except orjson.JSONEncodeError as exc:
                    failed[position] = EncodeError(f"event is not JSON-serializable: {exc}")
                    continue
            moment = layout.event_time(event)
            hour = (source, moment[:13] if moment else None)
            where = partitions.get(hour)
            if where is None:
                where = partitions[hour] = layout.partition(source, moment)
            current = open_files.get(where)
            if current is not None and current.size + len(line) > self.max_file_bytes:
                files.append(_close(current, source))
                current = None
            if current is None:
                current = open_files[where] = _Open(where, [], [], [])
            current.lines.append(line)
            current.ids.append(layout.line_id(event, line))
            current.covers.append(position)
            if moment is not None:
                if current.first is None or moment < current.first:
                    current.first = moment
                if current.last is None or moment > current.last:
                    current.last = moment
            current.size += len(line)
        files.extend(_close(current, sources[current.covers[0]]) for current in open_files.values())
        # Files in the order of their first event: deterministic, and oldest first.
        files.sort(key=lambda f: f.covers[0])
        return Encoded(files, failed)


def _close(current: _Open, source: str) -> ArchiveFile:
    return ArchiveFile(
        partition=current.partition,
        stem=layout.file_stem(current.first, current.ids),
        source=source,
        lines=b"".join(current.lines),
        message_ids=tuple(current.ids),
        covers=tuple(current.covers),
        first_received_at=current.first,
        last_received_at=current.last,
    )
