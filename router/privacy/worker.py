"""The regulation worker: carries out deletions at every destination, in the ops role.

It is one consumer group over ``privacy.regulations`` (``<client_id>-<prefix>privacy``), so
each regulation is worked on by one ops process at a time however many run. On being given
partitions it reads them from their start (the topic is compacted: that is every regulation's
latest revision) and acts only once a partition is read to its end, so it never redoes an
attempt an earlier owner recorded.

A deletion regulation lists every destination of the workspace as ``pending`` with a first
attempt due ``privacy.deletion.delay`` after its creation (events of the user already on
their way land first). For each destination due, the worker asks the destination's plugin
for its deletion request (:meth:`destinations.base.DestinationPlugin.deletion_request`):

- the plugin says it cannot -> ``not_supported`` with its reason;
- else the request goes through the plugin's own ``send`` and ``check``: accepted -> ``done``;
  any failure -> ``failed`` with the reason and message (credentials masked), and the next
  attempt is due after a randomized exponential backoff (``privacy.deletion.backoff_min`` ..
  ``backoff_max``, or the partner's Retry-After if longer), until ``max_attempts`` attempts
  are used (then it stays failed: fix the cause, then ``router privacy delete`` again).

Every change is written back as the regulation's next revision (same key), before the next
one is made. A destination removed from the workspace meanwhile is ``not_supported``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from destinations.base import AnyPlugin, DeletionUnsupported, DestinationError, PluginContext
from destinations.http import HttpClient
from destinations.registry import get_plugin
from router.broker.clients import BatchSender, OutRecord, make_consumer, make_producer
from router.broker.topics import Topics, ensure_topics, topics_for
from router.config import Workspace
from router.delivery.retry import RetryPolicy
from router.privacy.records import Attempt, DestinationDeletion, Regulation, parse_regulation
from router.roles import RoleBase

logger = logging.getLogger(__name__)

#: Regulations worked on at once (each one's destinations are tried together).
CONCURRENCY = 4
#: Longest a message kept in a regulation may be.
MESSAGE_LIMIT = 500


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RegulationWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.worker.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.assigned(assigned)


@dataclass(slots=True)
class _Owned:
    """What the worker holds of one of its partitions."""

    regulations: dict[str, Regulation] = field(default_factory=dict)
    caught_up: bool = False


class RegulationWorker(RoleBase):
    """See the module docstring."""

    name = "privacy"

    def __init__(
        self,
        workspace: Workspace,
        *,
        topics: Topics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.workspace = workspace
        self.kafka = workspace.kafka
        self.topics = topics or topics_for(workspace.kafka)
        self.settings = workspace.privacy.deletion
        self.policy = RetryPolicy(self.settings.backoff_min, self.settings.backoff_max, 1e18)
        self.group_id = f"{self.kafka.client_id}-{self.kafka.topic_prefix}privacy"
        self.destinations = {d.id: d for d in workspace.destinations}
        self.http = HttpClient()
        self.attempts = 0
        self._rng = rng or random.Random()
        self._owned: dict[TopicPartition, _Owned] = {}
        self._plugins: dict[str, AnyPlugin] = {}
        self._started_plugins: set[str] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._sender: BatchSender | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_poll = time.monotonic()
        self._running = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await ensure_topics(self.kafka, [self.topics.regulations, self.topics.suppressions])
        self._running = True
        try:
            await self.http.start()
            producer = make_producer(self.kafka, role="privacy")
            await producer.start()
            self._sender = BatchSender(producer)
            consumer = make_consumer(self.kafka, group_id=self.group_id, role="privacy")
            consumer.subscribe([self.topics.regulations], listener=_Rebalance(self))
            await consumer.start()
            self._consumer = consumer
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(consumer), name="privacy-worker")
        logger.info(
            "regulation worker reading %s as group %s", self.topics.regulations, self.group_id
        )

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(10):
                    await consumer.stop()
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(10):
                    await sender.producer.stop()
        for destination_id in list(self._started_plugins):
            try:
                async with asyncio.timeout(10):
                    await self._plugins[destination_id].stop()
            except Exception:
                logger.exception("privacy: destination %s did not stop cleanly", destination_id)
        self._started_plugins.clear()
        await self.http.close()

    def failure(self) -> str | None:
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            return f"the regulation worker ended: {task.exception()!r}"
        return None

    def health(self) -> tuple[bool, str]:
        failure = self.failure()
        if failure:
            return False, failure
        idle = time.monotonic() - self._last_poll
        if self._task is not None and idle > 120:
            return False, f"no poll of {self.topics.regulations} for {idle:.0f}s"
        held = sum(len(owned.regulations) for owned in self._owned.values())
        return True, f"{held} regulation(s) held, {self.attempts} attempt(s)"

    # ------------------------------------------------------------ partitions

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in partitions:
            self._owned[tp] = _Owned()
        if consumer is not None and partitions:
            await consumer.seek_to_beginning(*partitions)

    def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._owned.pop(tp, None)

    # ------------------------------------------------------------ the loop

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                polled = await consumer.getmany(timeout_ms=500, max_records=1000)
            except KafkaError as exc:
                logger.warning(
                    "privacy: reading %s failed (%s); retrying", self.topics.regulations, exc
                )
                await asyncio.sleep(1.0)
                continue
            self._last_poll = time.monotonic()
            for tp, records in polled.items():
                owned = self._owned.get(tp)
                if owned is None:
                    continue
                for record in records:
                    regulation = parse_regulation(record.value)
                    if regulation is None:
                        continue
                    held = owned.regulations.get(regulation.id)
                    if held is None or held.revision < regulation.revision:
                        owned.regulations[regulation.id] = regulation
            for tp, owned in list(self._owned.items()):
                if not owned.caught_up:
                    highwater = consumer.highwater(tp)
                    with contextlib.suppress(KafkaError, AssertionError):
                        if highwater is not None and await consumer.position(tp) >= highwater:
                            owned.caught_up = True
            await self._work_due()

    def due(self, now: float) -> list[tuple[TopicPartition, Regulation]]:
        """Deletions with a destination whose attempt is due, in partitions read to the end."""
        found: list[tuple[TopicPartition, Regulation]] = []
        for tp, owned in self._owned.items():
            if not owned.caught_up:
                continue
            found.extend(
                (tp, regulation)
                for regulation in owned.regulations.values()
                if regulation.deletes
                and any(
                    state.open and (state.next_attempt_at or 0) <= now
                    for state in regulation.destinations.values()
                )
            )
        return found

    async def _work_due(self) -> None:
        due = self.due(time.time())
        for start in range(0, len(due), CONCURRENCY):
            chunk = due[start : start + CONCURRENCY]
            await asyncio.gather(*(self._carry_out(tp, regulation) for tp, regulation in chunk))

    async def _carry_out(self, tp: TopicPartition, regulation: Regulation) -> None:
        now = time.time()
        wanted = [
            destination_id
            for destination_id, state in regulation.destinations.items()
            if state.open and (state.next_attempt_at or 0) <= now
        ]
        outcomes = await asyncio.gather(
            *(self.attempt(regulation.user_id, d, regulation.destinations[d]) for d in wanted)
        )
        updated = regulation
        for destination_id, state in zip(wanted, outcomes, strict=True):
            updated = updated.with_destination(destination_id, state, time.time())
        owned = self._owned.get(tp)
        if owned is None:
            return  # revoked meanwhile: the new owner tries again (deleting twice is harmless)
        assert self._sender is not None
        try:
            await self._sender.send(
                [OutRecord(self.topics.regulations, updated.id.encode(), updated.value())]
            )
        except KafkaError as exc:
            # Not recorded: the attempts are made again (deleting twice is harmless).
            logger.warning("privacy: could not record regulation %s: %s", updated.id, exc)
            return
        owned.regulations[updated.id] = updated
        logger.info(
            "privacy: regulation %s for a user: %s",
            updated.id,
            ", ".join(f"{d} {s.status}" for d, s in updated.destinations.items()),
        )

    # ------------------------------------------------------------ one destination

    async def attempt(
        self, user_id: str, destination_id: str, state: DestinationDeletion
    ) -> DestinationDeletion:
        """One deletion attempt at one destination; the destination's next state."""
        now = time.time()
        destination = self.destinations.get(destination_id)
        if destination is None:
            return _unsupported(state, "the destination is no longer in the workspace")
        try:
            plugin = self._plugin(destination_id)
            request = plugin.deletion_request(user_id)
        except DestinationError as exc:  # settings that no longer fit the plugin
            return self._failed(state, now, exc.reason, exc.message, None)
        if isinstance(request, DeletionUnsupported):
            return _unsupported(state, request.reason)
        self.attempts += 1
        try:
            if destination_id not in self._started_plugins:
                await plugin.start()
                self._started_plugins.add(destination_id)
            response = await plugin.send(request)
            refused = plugin.check(request, response)
        except DestinationError as exc:
            message = plugin.describe_text(exc.message)
            return self._failed(state, time.time(), exc.reason, message, exc.retry_after)
        except Exception as exc:
            logger.exception("privacy: deletion at %s failed unexpectedly", destination_id)
            message = plugin.describe_text(f"{type(exc).__name__}: {exc}")
            return self._failed(state, time.time(), "plugin_error", message, None)
        if refused:
            why = next(iter(refused.values()))
            message = plugin.describe_text(why.message)
            return self._failed(state, time.time(), why.reason, message, why.retry_after)
        return state.attempted(Attempt(time.time(), "done"), None)

    def _plugin(self, destination_id: str) -> AnyPlugin:
        plugin = self._plugins.get(destination_id)
        if plugin is None:
            destination = self.destinations[destination_id]
            context = PluginContext(
                http=self.http,
                kafka=self.kafka,
                state_dir=Path(self.workspace.processor.state_dir)
                / "destinations"
                / destination_id,
            )
            plugin = self._plugins[destination_id] = get_plugin(destination.type)(
                destination, context
            )
        return plugin

    def _failed(
        self,
        state: DestinationDeletion,
        now: float,
        reason: str,
        message: str,
        retry_after: float | None,
    ) -> DestinationDeletion:
        wait = self.policy.delay(state.attempts + 1, self._rng)
        if retry_after is not None:
            wait = max(wait, retry_after)
        attempt = Attempt(now, "failed", reason, message[:MESSAGE_LIMIT])
        return state.attempted(attempt, now + wait)

    def describe(self) -> Mapping[str, Any]:
        """For tests and the health line: partitions held and whether each is read to the end."""
        return {f"{tp.topic}[{tp.partition}]": owned.caught_up for tp, owned in self._owned.items()}


def _unsupported(state: DestinationDeletion, reason: str) -> DestinationDeletion:
    return DestinationDeletion(
        type=state.type,
        status="not_supported",
        reason=reason,
        max_attempts=state.max_attempts,
    )
