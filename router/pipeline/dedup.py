"""Stage 3: drop events whose ``messageId`` this source already sent within the window.

The guarantee: an event whose ``sourceId + messageId`` was first seen less than
``dedup_window`` ago is not delivered again, whichever partition of ``events.raw`` either copy
was written to and whichever processor instance reads it. Three parts make it hold:

- **One store per partition number, one owner per store.** The re-keying stage
  (:mod:`router.pipeline.rekey`) moves every record that sits outside its user's partition
  (a null key, another key, or another partitioner than Kafka's murmur2) onto
  ``events.rekeyed``, into the user's partition, before this stage. Partition ``p`` of
  ``events.raw`` and of ``events.rekeyed`` are read by the same processor (the assignor,
  :mod:`router.broker.assignor`, keeps them together; a processor given one without the other
  leaves it paused), so every copy of an event meets the one store ``p``. A copy
  whose userId/anonymousId differs from the first one's is another event to this stage: the
  key that places a record is its user.
- **State on disk.** One RocksDB store (``rocksdict``) per partition number under
  ``processor.state_dir``: 24 h at 25k events/s is about two billion ids, which no dict holds.
- **A changelog for the handover** (``dedup.changelog``, partition ``p`` for store ``p``). Each
  batch writes one record per store with the keys it saw first, in the same produce as its
  outputs (so it costs no extra round trip), tagged with the input offsets the batch ends at.
  A processor that is assigned ``p`` replays the changelog from the offset its local store has
  reached (the whole window when it has no store) before it reads ``p``. Entries of batches
  whose input offsets were never committed are skipped there: such a batch is read again by
  the new owner, and its entry may stand for outputs that were never acknowledged.

Order decides correctness: the processor produces a batch's outputs, awaits their
acks, *then* calls :meth:`Deduplicator.remember`, then commits offsets. A crash before
``remember`` replays the batch and delivers duplicates (allowed: at-least-once); remembering
before the acks could drop an event on replay (never allowed). The changelog keeps that order
through the commit check above.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, cast

from rocksdict import AccessType, Options, Rdict, WriteBatch

from router.pipeline.records import Envelope

logger = logging.getLogger(__name__)

_STAMP = struct.Struct(">d")
_OFFSET = struct.Struct(">q")

PendingKeys = dict[int, list[bytes]]

# Where a store has read the changelog up to (the next offset to apply). Dedup keys start with
# a source id ([A-Za-z0-9_-]+), never with a NUL byte, so this key cannot collide with one.
_CHECKPOINT = b"\x00changelog-next"

# A changelog entry: magic, version, first-seen time, the batch's next input offsets on
# events.raw and events.rekeyed for this partition (-1: the batch read nothing there), then
# every key as a 2-byte length and its bytes (a key is at most ~420 bytes: a source id and a
# messageId of at most 100 characters).
_ENTRY_MAGIC = b"DK\x01"
_ENTRY_HEAD = struct.Struct(">3sdqq")
# An entry stays well under the producer's 1 MiB batch: larger key sets are split.
_ENTRY_MAX_BYTES = 512 * 1024


def dedup_key(source_id: str, message_id: str) -> bytes:
    return f"{source_id}\x00{message_id}".encode()


class ChangelogEntry(NamedTuple):
    """The first sightings of one batch in one partition, as written to the changelog."""

    stamp: float
    raw_next: int
    rekeyed_next: int
    keys: list[bytes]


def encode_entries(
    stamp: float, raw_next: int, rekeyed_next: int, keys: list[bytes]
) -> list[bytes]:
    """One or more changelog values for ``keys`` (split when one would be too large)."""
    values: list[bytes] = []
    head = _ENTRY_HEAD.pack(_ENTRY_MAGIC, stamp, raw_next, rekeyed_next)
    parts: list[bytes] = [head]
    size = len(head)
    for key in keys:
        if size + len(key) + 2 > _ENTRY_MAX_BYTES and len(parts) > 1:
            values.append(b"".join(parts))
            parts, size = [head], len(head)
        parts.append(len(key).to_bytes(2, "big"))
        parts.append(key)
        size += len(key) + 2
    values.append(b"".join(parts))
    return values


def decode_entry(value: bytes | None) -> ChangelogEntry | None:
    """The entry in a changelog value, or None when it is not one (never raises)."""
    if not value or len(value) < _ENTRY_HEAD.size or not value.startswith(_ENTRY_MAGIC):
        return None
    _, stamp, raw_next, rekeyed_next = _ENTRY_HEAD.unpack_from(value)
    keys: list[bytes] = []
    position, end = _ENTRY_HEAD.size, len(value)
    while position + 2 <= end:
        length = int.from_bytes(value[position : position + 2], "big")
        position += 2
        if position + length > end:
            return None  # truncated: not something this router wrote
        keys.append(value[position : position + length])
        position += length
    return ChangelogEntry(stamp, raw_next, rekeyed_next, keys)


class Deduplicator:
    """Per-partition stores of seen ``sourceId + messageId`` keys with their first-seen time."""

    def __init__(
        self,
        state_dir: str | Path,
        window_seconds: float,
        *,
        on_empty_store: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(state_dir)
        self.window = window_seconds
        self._stores: dict[int, Rdict] = {}
        # Keys of batches whose outputs are written but not yet acknowledged: the processor
        # overlaps batches, so the next batch must treat them as seen already.
        self._in_flight: set[bytes] = set()
        self._on_empty_store = on_empty_store
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def path(self, partition: int) -> Path:
        return self.root / f"partition-{partition}"

    def stored_partitions(self) -> set[int]:
        """Partition numbers with a store on this machine's disk (open or not)."""
        found: set[int] = set()
        if not self.root.is_dir():
            return found
        for child in self.root.iterdir():
            name, _, number = child.name.partition("-")
            if name == "partition" and number.isdigit():
                found.add(int(number))
        return found

    def open(self, partitions: Iterable[int]) -> None:
        """Open (or create) the store of each newly assigned input partition."""
        for partition in partitions:
            if partition in self._stores:
                continue
            path = self.path(partition)
            fresh = not path.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            # TTL lets compaction reclaim old ids; lookups still check the stored time,
            # because compaction runs when it likes and the window must be exact.
            ttl = max(1, int(self.window) + 60)
            self._stores[partition] = Rdict(
                str(path), options, access_type=AccessType.with_ttl(ttl)
            )
            if fresh:
                logger.info("dedup store for partition %d starts empty at %s", partition, path)
                if self._on_empty_store:
                    self._on_empty_store()

    def close(self, partitions: Iterable[int] | None = None) -> None:
        targets = list(self._stores) if partitions is None else list(partitions)
        for partition in targets:
            store = self._stores.pop(partition, None)
            if store is not None:
                store.close()

    def reset(self) -> None:
        """Delete all state (tests, and `router dlq`-style maintenance)."""
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def filter(
        self, envelopes: list[Envelope]
    ) -> tuple[list[Envelope], dict[str, int], PendingKeys]:
        """Split a batch into first sightings and duplicates.

        Returns the kept envelopes, duplicate counts per source, and the keys to
        :meth:`remember` once the batch's outputs are acknowledged.
        """
        if not envelopes or self.window <= 0:
            return envelopes, {}, {}
        # Keys grouped by input partition, for one multi-get per store.
        by_partition: dict[int, tuple[list[bytes], list[int]]] = {}
        for index, env in enumerate(envelopes):
            group = by_partition.get(env.partition)
            if group is None:
                group = by_partition[env.partition] = ([], [])
            key = env.dedup_key = dedup_key(env.source_id, env.event["messageId"])
            group[0].append(key)
            group[1].append(index)
        now = self._clock()
        window = self.window
        unpack = _STAMP.unpack
        first = [False] * len(envelopes)
        duplicates: dict[str, int] = {}
        pending: PendingKeys = {}
        seen = self._in_flight
        for partition, (keys_in, indexes) in by_partition.items():
            store = self._stores.get(partition)
            if store is None:
                self.open([partition])
                store = self._stores[partition]
            stored = cast(list[bytes | None], store.get(cast(list[Any], keys_in)))
            keys: list[bytes] = []
            for key, index, value in zip(keys_in, indexes, stored, strict=True):
                if key in seen or (value is not None and now - unpack(value)[0] <= window):
                    source_id = envelopes[index].source_id
                    duplicates[source_id] = duplicates.get(source_id, 0) + 1
                    continue
                seen.add(key)
                keys.append(key)
                first[index] = True
            if keys:
                pending[partition] = keys
        # Keep input order across partitions: stages after this one are order-insensitive
        # except per user, and one user lives in one partition. (The processor's input is
        # already grouped by partition; input order also keeps a batch's events in the order
        # they sit in memory, which the later stages read measurably faster.)
        kept = [env for env, keep in zip(envelopes, first, strict=True) if keep]
        return kept, duplicates, pending

    def release(self, pending: PendingKeys, keys: set[bytes]) -> None:
        """Take ``keys`` out of a batch's pending keys: those events were dead-lettered whole
        after this stage (a middleware, plan or transformation failure), and a replay of the
        fixed event must not be dropped as a duplicate of one that never went anywhere."""
        for partition, pending_keys in pending.items():
            pending[partition] = [key for key in pending_keys if key not in keys]
        self._in_flight.difference_update(keys)

    def forget(self, pending: PendingKeys) -> None:
        """Drop in-flight keys of a batch that will be replayed (its outputs were not acked)."""
        for keys in pending.values():
            self._in_flight.difference_update(keys)

    def remember(
        self,
        pending: PendingKeys,
        stamp: float | None = None,
        checkpoints: dict[int, int] | None = None,
    ) -> None:
        """Record keys of a batch whose outputs Kafka acknowledged (one WriteBatch per store).

        ``stamp`` is the first-seen time written to the changelog with these keys (default:
        now); ``checkpoints`` the changelog offset each store has now read up to, written in
        the same atomic batch as the keys.
        """
        packed = _STAMP.pack(self._clock() if stamp is None else stamp)
        checkpoints = checkpoints or {}
        for partition in pending.keys() | checkpoints.keys():
            store = self._stores.get(partition)
            if store is None:
                continue  # partition revoked meanwhile: its new owner restores the changelog
            batch = WriteBatch(raw_mode=True)
            for key in pending.get(partition, ()):
                batch.put(key, packed)
            following = checkpoints.get(partition)
            if following is not None:
                batch.put(_CHECKPOINT, _OFFSET.pack(following))
            store.write(batch)
        self.forget(pending)

    def checkpoint(self, partition: int) -> int | None:
        """The changelog offset store ``partition`` has read up to; None if it never read it."""
        store = self._stores.get(partition)
        value = None if store is None else cast(bytes | None, store.get(_CHECKPOINT))
        return None if value is None else int(_OFFSET.unpack(value)[0])

    def apply(
        self,
        partition: int,
        entries: Iterable[ChangelogEntry],
        committed: tuple[int, int],
        following: int,
    ) -> int:
        """Restore changelog ``entries`` into store ``partition``; returns keys written.

        ``committed`` is the group's committed offset on (events.raw, events.rekeyed) for this
        partition (-1: none): an entry whose batch ends past it is skipped, since that batch
        will be read again. Entries older than the window are skipped too. ``following``
        becomes the store's checkpoint, in the same atomic write.
        """
        store = self._stores.get(partition)
        if store is None:
            return 0
        oldest = self._clock() - self.window
        raw_done, rekeyed_done = committed
        batch = WriteBatch(raw_mode=True)
        written = 0
        for entry in entries:
            if entry.stamp < oldest:
                continue
            if entry.raw_next > raw_done or entry.rekeyed_next > rekeyed_done:
                continue
            packed = _STAMP.pack(entry.stamp)
            for key in entry.keys:
                batch.put(key, packed)
            written += len(entry.keys)
        batch.put(_CHECKPOINT, _OFFSET.pack(following))
        store.write(batch)
        return written
