"""What keeps an agent's memory bounded by its settings, not by the backlog it drains.

Checked by counting (paused partitions, records taken, objects alive), never by RSS: the
memory benchmark (``python -m bench --only memory``) measures the RSS itself.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

from aiokafka.structs import TopicPartition

from router import gc_tuning
from router.broker.topics import ensure_topics
from router.config import KafkaSettings
from router.delivery.fetcher import Fetcher
from router.delivery.records import InFlight
from tests.delivery.helpers import CONSUMER_OPTIONS, event, produce_events, wait_until


class _Cycle:
    """Like aiokafka's dropped fetch responses: a reference cycle holding bytes."""

    def __init__(self, size: int) -> None:
        self.me = self
        self.blob = bytes(size)


def _dropped_cycle() -> weakref.ref[_Cycle]:
    return weakref.ref(_Cycle(1 << 20))


def test_collect_due_frees_cycles_at_most_once_per_interval() -> None:
    every = gc_tuning.FULL_COLLECTION_EVERY
    gc_tuning.acquire()
    try:
        dropped = _dropped_cycle()
        now = gc_tuning._last_full + every
        assert gc_tuning.collect_due(now)
        assert dropped() is None, "a full collection frees the cycle and its bytes"
        assert not gc_tuning.collect_due(now + every / 2), "not twice within the interval"
        assert gc_tuning.collect_due(now + every)
    finally:
        gc_tuning.release()
    # Settings released: the role is gone, Python's own collector schedule is back.
    assert not gc_tuning.collect_due(gc_tuning._last_full + 10 * every)
    gc.collect()


def test_delivery_asks_for_a_collection_only_after_aiokafka_dropped_records() -> None:
    every = gc_tuning.FULL_COLLECTION_EVERY
    gc_tuning.acquire()
    try:
        gc_tuning.collect_due(gc_tuning._last_full + every)  # start from a clean slate
        now = gc_tuning._last_full + every
        dropped = _dropped_cycle()
        assert not gc_tuning.collect_due(now, after_drops_only=True), "nothing was dropped"
        assert dropped() is not None
        gc_tuning.note_dropped()
        assert gc_tuning.collect_due(now, after_drops_only=True)
        assert dropped() is None, "the collection after a drop frees the cycle"
        gc_tuning.note_dropped()
        assert not gc_tuning.collect_due(now + every / 2, after_drops_only=True), "interval"
        assert gc_tuning.collect_due(now + every, after_drops_only=True)
        assert not gc_tuning.collect_due(now + 2 * every, after_drops_only=True), "noted once"
    finally:
        gc_tuning.release()
    gc.collect()


async def test_at_the_in_flight_bound_nothing_is_paused_and_nothing_is_lost(
    kafka_ns: KafkaSettings,
) -> None:
    """At the bound the fetcher polls for no partition instead of pausing them all.

    aiokafka throws away what it prefetched for a paused partition (to fetch it again later),
    and the thrown-away response stays in memory until a full collection; so the bound must
    not pause. The poll it makes meanwhile keeps the member in its group: with a poll
    interval far shorter than the time spent at the bound, the partitions stay assigned.
    """
    topic, retry_topic = "mem.dest", "mem.dest.retry"
    names = [kafka_ns.topic_prefix + topic, kafka_ns.topic_prefix + retry_topic]
    await ensure_topics(kafka_ns, names)
    count, bound = 120, 10
    await produce_events(kafka_ns, names[0], [event(i) for i in range(count)])

    taken: list[InFlight] = []

    async def take(items: list[InFlight]) -> None:
        taken.extend(items)

    fetcher = Fetcher(
        "mem",
        kafka=kafka_ns,
        group_id=f"{kafka_ns.client_id}-mem",
        topic=names[0],
        retry_topic=names[1],
        max_in_flight=bound,
        take=take,
        poll_timeout=0.05,
        consumer_options={**CONSUMER_OPTIONS, "max_poll_interval_ms": 1000},
    )
    await fetcher.start()
    try:
        await wait_until(lambda: len(taken) >= bound, timeout=20, what="the bound reached")
        assigned = set(fetcher.consumer.assignment())
        epochs = {tp: fetcher.tracker.epoch(tp) for tp in assigned}
        # Stay at the bound for well over max_poll_interval_ms, watching every poll.
        gc_tuning._dropped = False  # the assignment dropped nothing yet, but it says so
        polls = 0
        last = fetcher.last_poll
        while polls < 40:
            await wait_until(
                lambda since=last: fetcher.last_poll != since, timeout=5, what="a poll"
            )
            last = fetcher.last_poll
            polls += 1
            assert fetcher.consumer.paused() == set(), "the bound paused partitions"
            assert len(taken) == bound, "records taken past the in-flight bound"
        assert set(fetcher.consumer.assignment()) == assigned, "the member left its group"
        assert not gc_tuning._dropped, "waiting at the bound made aiokafka drop records"
        # Release everything as it comes: every record exactly once, in order per partition.
        while len(taken) < count:
            unreleased = taken[len(taken) - fetcher.in_flight :]
            fetcher.finish(unreleased)
            fetcher.release(len(unreleased))
            await wait_until(
                lambda: fetcher.in_flight > 0 or len(taken) == count, timeout=20, what="more"
            )
        assert {tp: fetcher.tracker.epoch(tp) for tp in assigned} == epochs, "reassigned"
        offsets: dict[TopicPartition, list[int]] = {}
        for item in taken:
            offsets.setdefault(TopicPartition(item.topic, item.partition), []).append(item.offset)
        assert sum(len(o) for o in offsets.values()) == count
        for got in offsets.values():
            assert got == list(range(got[0], got[0] + len(got))), "a record lost or repeated"
    finally:
        await fetcher.stop_fetching(asyncio.get_running_loop().time() + 2)
        await fetcher.close(time_limit=5)
