"""Records that flow between the processor's stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Envelope:
    """One decoded event in flight through the processor, with where it came from.

    ``partition`` is the partition number it was read from (of ``events.raw`` or
    ``events.rekeyed``: the same number names its dedup store). A record read from
    ``events.rekeyed`` has ``origin``: (partition, offset, timestamp) of the original record
    in ``events.raw``, which is what rejections point at.
    """

    event: dict[str, Any]
    raw: bytes
    partition: int
    offset: int
    timestamp_ms: int
    source_id: str = ""
    #: The record's headers, for the re-keying stage to carry along (router.pipeline.rekey).
    headers: Sequence[tuple[str, bytes]] = ()
    origin: tuple[int, int, int] | None = None
    #: The key dedup knows the event by (set by Deduplicator.filter), to forget it again if
    #: the event is dead-lettered whole, so a fixed replay is not taken for a duplicate.
    dedup_key: bytes = b""
