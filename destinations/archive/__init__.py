"""Archive every event as gzip JSON lines in a directory or S3-compatible object storage.

Files are partitioned by source, date and hour (:mod:`destinations.archive.layout`), written
atomically (:mod:`destinations.archive.storage`) and described by a manifest that lets a
reader drop the duplicates a crash and replay leave (:mod:`destinations.archive.reader`).
An event counts as delivered once its file and that file's manifest are stored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from destinations.archive.config import ArchiveSettings, S3Location
from destinations.archive.encoder import ArchiveEncoder, ArchiveFile
from destinations.archive.layout import Manifest
from destinations.archive.reader import ArchiveReader
from destinations.archive.storage import LocalStorage, S3Storage, Storage
from destinations.base import (
    DestinationError,
    DestinationPlugin,
    Encoded,
    Event,
    PluginContext,
    event_sources,
)
from destinations.registry import register
from router.config import Destination
from router.spec import format_timestamp

__all__ = [
    "ArchiveDestination",
    "ArchiveFile",
    "ArchiveReader",
    "ArchiveSettings",
    "LocalStorage",
    "S3Location",
    "S3Storage",
    "WrittenFile",
    "open_storage",
]


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A stored file: where, how big (compressed), its digest, and its manifest."""

    location: str
    manifest: str
    events: int
    size: int
    sha256: str
    elapsed: float


def open_storage(settings: ArchiveSettings, *, timeout: float = 30.0) -> Storage:
    """The storage the settings name (not started)."""
    if settings.s3 is not None:
        return S3Storage(settings.s3, timeout=timeout)
    assert settings.directory is not None  # the settings model requires one of the two
    return LocalStorage(settings.directory)


@register("archive")
class ArchiveDestination(DestinationPlugin[ArchiveSettings, ArchiveFile, WrittenFile]):
    settings_model = ArchiveSettings
    summary = "gzip JSON lines partitioned by source/date/hour, in a directory or S3"
    deletion_unsupported = (
        "archive files are written once and never rewritten by the router: filter the "
        "user's lines out of the files (ArchiveReader lists them)"
    )
    max_batch_size: ClassVar[int] = 100_000

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        #: For events whose record names no source (written to dest.<id> by hand): the
        #: destination's first source, which is the only one in the common case.
        self.default_source = destination.sources[0]
        self.encoder = ArchiveEncoder(max_file_bytes=self.settings.max_file_bytes)
        self.storage = open_storage(self.settings, timeout=self.timeout)

    # Files roll by rows and age: the lane batches by these (its delivery options do not
    # apply to archives).
    @property
    def batch_size(self) -> int:
        return min(self.settings.max_file_events, self.max_batch_size)

    @property
    def flush_interval(self) -> float:
        return self.settings.max_file_age

    async def start(self) -> None:
        await self.storage.start()

    async def stop(self) -> None:
        await self.storage.stop()

    async def health_check(self) -> tuple[bool, str]:
        return await self.storage.health()

    def encode(self, events: Sequence[Event]) -> Encoded[ArchiveFile]:
        sources = event_sources(events)
        fallback = self.default_source
        return self.encoder.encode(
            events,
            [s or fallback for s in sources] if sources else [fallback] * len(events),
        )

    async def send(self, request: ArchiveFile) -> WrittenFile:
        started = time.monotonic()
        level = self.settings.compression_level
        size, digest = await self.storage.write_gzip(request.data_key, request.lines, level)
        manifest = Manifest(
            file=request.data_key,
            source=request.source,
            destination=self.destination.id,
            events=len(request.message_ids),
            size=size,
            uncompressed_bytes=len(request.lines),
            sha256=digest,
            first_received_at=request.first_received_at,
            last_received_at=request.last_received_at,
            written_at=format_timestamp(datetime.now(UTC)),
            message_ids=request.message_ids,
        )
        # Second, so that a manifest always describes a complete data file.
        await self.storage.write(request.manifest_key, manifest.to_json())
        return WrittenFile(
            location=self.storage.url(request.data_key),
            manifest=self.storage.url(request.manifest_key),
            events=manifest.events,
            size=size,
            sha256=digest,
            elapsed=time.monotonic() - started,
        )

    def check(self, request: ArchiveFile, response: WrittenFile) -> Mapping[int, DestinationError]:
        # A file is stored whole or not at all: a failure raised in send, for every event.
        return {}

    def describe_request(self, request: ArchiveFile, *, limit: int | None = None) -> dict[str, Any]:
        return {
            "location": self.describe_text(self.storage.url(request.data_key)),
            "events": len(request.message_ids),
            "uncompressedBytes": len(request.lines),
            "firstMessageId": request.message_ids[0] if request.message_ids else None,
            "lastMessageId": request.message_ids[-1] if request.message_ids else None,
        }

    def describe_response(
        self, response: WrittenFile, *, limit: int | None = None
    ) -> dict[str, Any]:
        return {
            "location": self.describe_text(response.location),
            "manifest": self.describe_text(response.manifest),
            "events": response.events,
            "bytes": response.size,
            "sha256": response.sha256,
            "elapsed": round(response.elapsed, 6),
        }
