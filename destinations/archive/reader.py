"""Reading an archive back: every event once, whatever crashes and replays left behind.

Delivery is at-least-once: when an agent stops after writing a file but before its input
offsets are committed, the events are written again by the next owner. Written in the same
batch, they get the same file name and replace the first copy; cut into other batches, they
land in another file of the **same partition** (the partition is a function of the event).
The rule a reader follows, which this module implements:

1. only files that have a manifest count (a data file without one was interrupted before its
   events were acknowledged, and they were written again elsewhere);
2. within one ``source=/date=/hour=`` partition, take the manifests in key order (names
   start with the earliest ``receivedAt``) and keep the first occurrence of each messageId:
   ``manifest.messageIds[i]`` names line ``i`` of the data file, so duplicates can be found
   from the manifests alone, without decompressing a file.

Memory is one partition's messageIds at a time.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from destinations.archive import layout
from destinations.archive.layout import Manifest
from destinations.archive.storage import Storage
from destinations.base import Event

logger = logging.getLogger(__name__)


class CorruptArchive(ValueError):
    """A data file disagrees with its manifest beyond what a rewrite explains."""


@dataclass(frozen=True, slots=True)
class ListedFile:
    manifest_key: str
    data_key: str
    partition: str
    manifest: Manifest


class ArchiveReader:
    """Reads what an archive destination wrote to ``storage`` (a started storage)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        #: Events skipped by the last :meth:`events` because an earlier file had them.
        self.duplicates = 0

    async def files(self, prefix: str = "") -> list[ListedFile]:
        """Complete files under ``prefix`` (``source=web/``, ``source=web/date=2026-11-23/``)."""
        listed = []
        for key in await self.storage.list_keys(f"{layout.MANIFESTS}/{prefix}"):
            if not key.endswith(layout.MANIFEST_SUFFIX):
                continue
            manifest = Manifest.from_json(await self.storage.read(key))
            data_key = layout.data_key_of_manifest(key)
            partition_path = data_key.rsplit("/", 1)[0]
            listed.append(ListedFile(key, data_key, partition_path, manifest))
        return listed

    async def orphans(self, prefix: str = "") -> list[str]:
        """Data files without a manifest (interrupted writes; safe to delete)."""
        complete = {f.data_key for f in await self.files(prefix)}
        return [
            key
            for key in await self.storage.list_keys(prefix)
            if key.endswith(layout.DATA_SUFFIX)
            and not key.startswith(f"{layout.MANIFESTS}/")
            and key not in complete
        ]

    async def events(self, prefix: str = "") -> AsyncIterator[Event]:
        """Every archived event under ``prefix`` once, partition by partition."""
        self.duplicates = 0
        seen: set[str] = set()
        current: str | None = None
        for listed in await self.files(prefix):
            if listed.partition != current:
                current, seen = listed.partition, set()
            for message_id, line in await self._lines(listed):
                if message_id in seen:
                    self.duplicates += 1
                    continue
                seen.add(message_id)
                event = orjson.loads(line)
                if isinstance(event, dict):
                    yield event

    async def _lines(self, listed: ListedFile) -> list[tuple[str, bytes]]:
        stored = await self.storage.read(listed.data_key)
        manifest = listed.manifest
        lines = gzip.decompress(stored).split(b"\n")
        if lines and not lines[-1]:
            lines.pop()  # the last line's newline
        if hashlib.sha256(stored).hexdigest() == manifest.sha256:
            ids = list(manifest.message_ids)
        else:
            # Rewritten after its manifest (a replayed batch, interrupted before its new
            # manifest): same name, so the same messageIds in the same order, or corrupt.
            ids = [layout.line_id(orjson.loads(line), line) for line in lines]
            if ids != list(manifest.message_ids):
                raise CorruptArchive(f"{listed.data_key} does not match its manifest")
            logger.info("%s was rewritten after its manifest; its events match", listed.data_key)
        if len(lines) != len(ids):
            raise CorruptArchive(
                f"{listed.data_key} has {len(lines)} lines, its manifest lists {len(ids)}"
            )
        return list(zip(ids, lines, strict=True))
