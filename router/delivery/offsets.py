"""Which offsets may be committed: only those below the first event without an outcome.

Events of one partition finish out of order (concurrent senders, batches of several
partitions). Each partition keeps the offsets it handed out, in order; the committable
position is one past the longest finished prefix. So a commit never skips an event whose
outcome is not durably written, whatever order the outcomes arrive in.

Each assignment of a partition gets a new ``epoch``: work taken before a rebalance that
finishes after it is ignored, so it can never commit for a partition this member lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from aiokafka.structs import TopicPartition


class _Partition:
    __slots__ = ("committed", "done", "epoch", "order", "position")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.order: deque[int] = deque()
        self.done: set[int] = set()
        self.position: int | None = None  # next offset to commit
        self.committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._epochs = 0

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            if tp not in self._parts:
                self._epochs += 1
                self._parts[tp] = _Partition(self._epochs)

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._parts.pop(tp, None)

    def epoch(self, tp: TopicPartition) -> int | None:
        part = self._parts.get(tp)
        return part.epoch if part is not None else None

    def owns(self, tp: TopicPartition, epoch: int) -> bool:
        part = self._parts.get(tp)
        return part is not None and part.epoch == epoch

    def add(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` was taken (offsets of a partition arrive in increasing order)."""
        self._parts[tp].order.append(offset)

    def add_many(self, tp: TopicPartition, offsets: list[int]) -> None:
        """:meth:`add` for a poll's offsets of one partition (increasing)."""
        self._parts[tp].order.extend(offsets)

    def finish(self, tp: TopicPartition, offset: int, epoch: int) -> None:
        part = self._parts.get(tp)
        if part is None or part.epoch != epoch:
            return  # revoked since: the new owner redelivers it
        part.done.add(offset)
        order = part.order
        while order and order[0] in part.done:
            first = order.popleft()
            part.done.discard(first)
            part.position = first + 1

    def finish_many(self, tp: TopicPartition, offsets: list[int], epoch: int) -> None:
        """:meth:`finish` for several offsets of one partition."""
        part = self._parts.get(tp)
        if part is None or part.epoch != epoch:
            return
        done = part.done
        done.update(offsets)
        order = part.order
        last = None
        while order and order[0] in done:
            last = order.popleft()
            done.discard(last)
        if last is not None:
            part.position = last + 1

    def pending(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        chosen = self._parts if partitions is None else partitions
        total = 0
        for tp in chosen:
            part = self._parts.get(tp)
            if part is not None:
                total += len(part.order)
        return total

    def committable(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Positions that moved since the last commit."""
        chosen = self._parts if partitions is None else partitions
        out: dict[TopicPartition, int] = {}
        for tp in chosen:
            part = self._parts.get(tp)
            if part is not None and part.position is not None and part.position != part.committed:
                out[tp] = part.position
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset
