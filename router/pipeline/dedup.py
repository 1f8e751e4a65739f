"""Stage 3: drop events whose ``messageId`` this source already sent within the window.

State lives on disk, one RocksDB store (``rocksdict``) per input partition: 24 h at 25k
events/s is about two billion ids, which no dict holds. Duplicates of an event share its
partition key (the user), so they meet in the same partition's store.

Order decides correctness (design.md): the processor produces a batch's outputs, awaits their
acks, *then* calls :meth:`Deduplicator.remember`, then commits offsets. A crash before
``remember`` replays the batch and delivers duplicates (allowed: at-least-once); remembering
before the acks could drop an event on replay (never allowed).
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from rocksdict import AccessType, Options, Rdict, WriteBatch

from router.pipeline.records import Envelope

logger = logging.getLogger(__name__)

_STAMP = struct.Struct(">d")

PendingKeys = dict[int, list[bytes]]


def dedup_key(source_id: str, message_id: str) -> bytes:
    return f"{source_id}\x00{message_id}".encode()


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

    def open(self, partitions: Iterable[int]) -> None:
        """Open (or create) the store of each newly assigned input partition."""
        for partition in partitions:
            if partition in self._stores:
                continue
            path = self.root / f"partition-{partition}"
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

    def remember(self, pending: PendingKeys) -> None:
        """Record keys of a batch whose outputs Kafka acknowledged (one WriteBatch per store)."""
        stamp = _STAMP.pack(self._clock())
        for partition, keys in pending.items():
            store = self._stores.get(partition)
            if store is None:
                continue  # partition revoked meanwhile: its new owner has its own store
            batch = WriteBatch(raw_mode=True)
            for key in keys:
                batch.put(key, stamp)
            store.write(batch)
        self.forget(pending)
