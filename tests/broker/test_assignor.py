"""The processor's assignor: partition p of every input topic on one member, balanced, sticky."""

from __future__ import annotations

import itertools

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from router.broker.assignor import CopartitionedAssignor, copartition

RAW, REKEYED = "events.raw", "events.rekeyed"
BOTH = {RAW, REKEYED}


def numbers_by_member(plan: dict[str, dict[str, list[int]]]) -> dict[str, list[int]]:
    for member, topics in plan.items():
        # Co-partitioned: a member has the same numbers on both topics.
        assert topics.get(RAW, []) == topics.get(REKEYED, []), member
    return {member: topics.get(RAW, []) for member, topics in plan.items()}


def test_every_partition_once_balanced_and_copartitioned() -> None:
    for partitions, members in itertools.product((1, 2, 4, 7, 12), (1, 2, 3, 5)):
        subs = {f"m{i}": BOTH for i in range(members)}
        plan = copartition({RAW: set(range(partitions)), REKEYED: set(range(partitions))}, subs, {})
        owned = numbers_by_member(plan)
        assert sorted(itertools.chain(*owned.values())) == list(range(partitions))
        sizes = sorted(len(v) for v in owned.values())
        assert sizes[-1] - sizes[0] <= 1, (partitions, members, owned)


def test_owners_keep_their_partitions_and_stores_pull_theirs_back() -> None:
    parts = {RAW: set(range(6)), REKEYED: set(range(6))}
    subs = {"a": BOTH, "b": BOTH, "c": BOTH}
    # a owned 0,1,2 and b 3,4,5 before c joined; c has an old store of partition 5.
    local = {"a": ({0, 1, 2}, {0, 1, 2}), "b": ({3, 4, 5}, {3, 4, 5}), "c": (set(), {5})}
    owned = numbers_by_member(copartition(parts, subs, local))
    # Balanced (2 each): a and b keep two of theirs, c gets its stored 5 and the rest.
    assert owned == {"a": [0, 1], "b": [3, 4], "c": [2, 5]}
    # After a restart nobody owns anything: stores on disk decide.
    local = {"a": (set(), {3}), "b": (set(), {0, 1})}
    owned = numbers_by_member(
        copartition({RAW: set(range(4)), REKEYED: set(range(4))}, {"a": BOTH, "b": BOTH}, local)
    )
    assert owned == {"a": [2, 3], "b": [0, 1]}


def test_metadata_round_trip_through_the_assignor() -> None:
    assignor = CopartitionedAssignor(lambda: ({1}, {1, 2}))
    meta = assignor.metadata([REKEYED, RAW])
    assert meta.subscription == [RAW, REKEYED]
    assert orjson.loads(meta.user_data) == {"owned": [1], "stored": [1, 2]}

    class Cluster:  # the two methods of aiokafka's ClusterMetadata the assignor reads
        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3}

    other = ConsumerProtocolMemberMetadata(0, [RAW, REKEYED], b"not json")
    result = assignor.assign(Cluster(), {"x": meta, "y": other})
    x = dict(result["x"].assignment)
    y = dict(result["y"].assignment)
    assert 1 in x[RAW] and x[RAW] == x[REKEYED] and y[RAW] == y[REKEYED]
    assert sorted(x[RAW] + y[RAW]) == [0, 1, 2, 3]
