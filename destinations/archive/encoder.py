"""A batch of events -> the files it makes: one or more per partition (pure).

Events keep their batch order inside a file. A partition's events are cut into several files
when their JSON lines exceed ``max_file_bytes`` (a single larger event gets a file of its
own). Compression happens when the file is written, off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from destinations.archive import layout
from destinations.base import DestinationError, Encoded, EncodeError, Event


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
    times: list[datetime]
    size: int = 0


class ArchiveEncoder:
    def __init__(self, *, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes

    def encode(self, events: Sequence[Event], sources: Sequence[str]) -> Encoded[ArchiveFile]:
        """``sources[i]`` is the source of ``events[i]``."""
        failed: dict[int, DestinationError] = {}
        files: list[ArchiveFile] = []
        open_files: dict[tuple[str, str], _Open] = {}
        for position, (event, source) in enumerate(zip(events, sources, strict=True)):
            try:
                line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
            except orjson.JSONEncodeError as exc:
                failed[position] = EncodeError(f"event is not JSON-serializable: {exc}")
                continue
            moment = layout.event_time(event)
            where = layout.partition(source, moment)
            current = open_files.get((source, where))
            if current is not None and current.size + len(line) > self.max_file_bytes:
                files.append(_close(current, source))
                current = None
            if current is None:
                current = open_files[(source, where)] = _Open(where, [], [], [], [])
            current.lines.append(line)
            current.ids.append(layout.line_id(event, line))
            current.covers.append(position)
            if moment is not None:
                current.times.append(moment)
            current.size += len(line)
        files.extend(_close(current, source) for (source, _), current in open_files.items())
        # Files in the order of their first event: deterministic, and oldest first.
        files.sort(key=lambda f: f.covers[0])
        return Encoded(files, failed)


def _close(current: _Open, source: str) -> ArchiveFile:
    first = min(current.times) if current.times else None
    last = max(current.times) if current.times else None
    return ArchiveFile(
        partition=current.partition,
        stem=layout.file_stem(first, current.ids),
        source=source,
        lines=b"".join(current.lines),
        message_ids=tuple(current.ids),
        covers=tuple(current.covers),
        first_received_at=layout.iso(first),
        last_received_at=layout.iso(last),
    )
