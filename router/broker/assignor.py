"""The processor's partition assignor: co-partitioned, and sticky to local dedup stores.

Partition ``p`` of every topic the group reads (``events.raw`` and ``events.rekeyed``) goes to
one member, so one dedup store sees every record of the users hashed to ``p`` (see
``router.pipeline.dedup``). Among members, a partition number stays with the member that owned
it before the rebalance, else goes to a member that has a store for it on disk, else to the
least loaded, keeping counts balanced (each member gets ``n // m`` or one more). That keeps
restores from the dedup changelog short: a member that keeps a partition reads nothing, one
with an older store of it reads only what it missed.

Members say what they own and store in the JoinGroup metadata (``user_data``, JSON). The
processor also offers round robin, which the coordinator picks only while a member of an
earlier version (round robin only) is in the group: the processor then leaves partitions that
are not paired paused until the upgrade is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

logger = logging.getLogger(__name__)

LocalState = Callable[[], tuple[Iterable[int], Iterable[int]]]


class CopartitionedAssignor:
    """An aiokafka partition assignor (duck-typed: aiokafka calls these four members)."""

    name = "router-copartitioned"
    version = 0

    def __init__(self, local_state: LocalState) -> None:
        """``local_state()`` -> (partition numbers owned now, numbers with a store on disk)."""
        self._local_state = local_state

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        owned, stored = self._local_state()
        user_data = orjson.dumps({"owned": sorted(owned), "stored": sorted(stored)})
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), user_data)

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        subscriptions = {member: set(meta.subscription) for member, meta in members.items()}
        partitions: dict[str, set[int]] = {}
        for topic in sorted(set().union(*subscriptions.values())):
            found = cluster.partitions_for_topic(topic)
            if found is None:
                logger.warning("no partition metadata for topic %s", topic)
                continue
            partitions[topic] = set(found)
        local = {member: _local(meta.user_data) for member, meta in members.items()}
        plan = copartition(partitions, subscriptions, local)
        return {
            member: ConsumerProtocolMemberAssignment(
                self.version, sorted((t, sorted(ps)) for t, ps in plan[member].items()), b""
            )
            for member in members
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        """Nothing to keep: the processor learns its assignment from its rebalance listener."""


def _local(user_data: bytes | None) -> tuple[set[int], set[int]]:
    try:
        data = orjson.loads(user_data or b"{}")
        return {int(p) for p in data.get("owned", ())}, {int(p) for p in data.get("stored", ())}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return set(), set()  # a member we do not understand simply has no preference


def copartition(
    partitions: Mapping[str, set[int]],
    subscriptions: Mapping[str, set[str]],
    local: Mapping[str, tuple[set[int], set[int]]],
) -> dict[str, dict[str, list[int]]]:
    """member -> topic -> partitions: each partition number to one member, balanced, sticky."""
    members = sorted(subscriptions)
    plan: dict[str, dict[str, list[int]]] = {m: {} for m in members}
    if not members:
        return plan
    numbers = sorted(set().union(*partitions.values())) if partitions else []
    base, extra = divmod(len(numbers), len(members))
    counts = dict.fromkeys(members, 0)
    extras_used = 0
    owner: dict[int, str] = {}

    def take(member: str, number: int) -> bool:
        nonlocal extras_used
        if counts[member] < base:
            pass
        elif counts[member] == base and extras_used < extra:
            extras_used += 1
        else:
            return False
        counts[member] += 1
        owner[number] = member
        return True

    # Keep what members own, then give stores back to who has them, then fill the least loaded.
    for preference in (0, 1):
        for number in numbers:
            if number in owner:
                continue
            for member in members:
                if number in local.get(member, (set(), set()))[preference] and take(member, number):
                    break
    for number in numbers:
        if number in owner:
            continue
        for member in sorted(members, key=lambda m: (counts[m], m)):
            if take(member, number):
                break
    for topic, numbers_of_topic in partitions.items():
        subscribed = [m for m in members if topic in subscriptions[m]]
        if not subscribed:
            continue
        for number in sorted(numbers_of_topic):
            member = owner[number]
            if topic not in subscriptions[member]:
                # Only in a group whose members read different topics (mixed versions): the
                # partition must still be read by someone.
                member = subscribed[number % len(subscribed)]
            plan[member].setdefault(topic, []).append(number)
    return plan
