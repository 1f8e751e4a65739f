"""Records that flow between the processor's stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Envelope:
    """One decoded event in flight through the processor, with where it came from."""

    event: dict[str, Any]
    raw: bytes
    partition: int
    offset: int
    timestamp_ms: int
    source_id: str = ""
    #: The key dedup knows the event by (set by Deduplicator.filter), to forget it again if
    #: the event is dead-lettered whole, so a fixed replay is not taken for a duplicate.
    dedup_key: bytes = b""
