"""The delivery agent role: at-least-once delivery from ``dest.<id>`` for some destinations.

One :class:`DeliveryAgent` serves one or more destinations. Each gets its own
:class:`~router.delivery.lane.DestinationLane`: its own consumer group
``<client_id>-deliver-<id>``, queue, sender tasks, rate limiter and outcome writer, so a
slow or failing destination never delays another. The agent shares one Kafka producer and
one HTTP client (keep-alive connections per partner host) between them.

Outcomes per event: delivered; retryable (429 honouring ``Retry-After``, 408, 5xx except
501/505, timeouts, connection errors) -> ``dest.<id>.retry`` with attempt count and due time;
permanent, or past the retry window -> ``dest.<id>.dlq`` with the event as received, the
request sent and the response. Every outcome is also published to the status topic
``delivery.status`` for the Event Delivery view. Offsets are committed only once every
earlier event of the partition has its outcome acknowledged by Kafka.

Record formats (retry headers, dead-letter and status values) are specified in
:mod:`router.delivery.records`; in short, a status record is keyed by messageId and holds
``destination, destinationType, sourceId, messageId, type, event, outcome
(delivered|retry|dlq), attempt, reason, status, latency, duration, at, dueAt, error``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from destinations.base import AnyPlugin, InvalidSettings, PluginContext
from destinations.http import HttpClient
from destinations.registry import get_plugin
from router import gc_tuning
from router.broker.clients import BatchSender, make_producer
from router.broker.topics import Topics, ensure_topics, topics_for
from router.config import Destination, Workspace
from router.delivery.lane import DestinationLane
from router.observability.delivery import DeliveryMetrics
from router.privacy.state import SuppressionList
from router.roles import RoleBase

logger = logging.getLogger(__name__)

DEFAULT_GRACE = 20.0


class DeliveryAgent(RoleBase):
    """Delivers the events of ``destination_ids``; see the module docstring."""

    name = "deliver"

    def __init__(
        self,
        workspace: Workspace,
        destination_ids: Sequence[str],
        registry: CollectorRegistry,
        *,
        topics: Topics | None = None,
        grace: float = DEFAULT_GRACE,
        commit_interval: float = 1.0,
        stall_after: float | None = None,
        consumer_options: Mapping[str, object] | None = None,
    ) -> None:
        if not destination_ids:
            raise ValueError("a delivery agent needs at least one destination")
        known = {d.id: d for d in workspace.destinations}
        unknown = [d for d in destination_ids if d not in known]
        if unknown:
            raise ValueError(f"unknown destination(s): {', '.join(unknown)}")
        self.workspace = workspace
        self.destinations: list[Destination] = [known[d] for d in dict.fromkeys(destination_ids)]
        self.kafka = workspace.kafka
        self.topics = topics or topics_for(workspace.kafka)
        self.metrics = DeliveryMetrics(registry)
        self.grace = grace
        self.commit_interval = commit_interval
        self.stall_after = stall_after
        self.consumer_options = dict(consumer_options or {})
        self.lanes: dict[str, DestinationLane] = {}
        self.http = HttpClient()
        self._state_dir = Path(workspace.processor.state_dir) / "destinations"
        self._registry = registry
        self._producer: AIOKafkaProducer | None = None
        self._checks: asyncio.Task[None] | None = None
        self._started = False
        self._plugins: dict[str, AnyPlugin] = {}
        self.suppressions = SuppressionList()
        self._suppression_tail = self.suppressions.tail(
            workspace.kafka, self.topics, role="deliver"
        )

    def context_for(self, destination_id: str) -> PluginContext:
        """What the agent lends one destination's plugin (its own state directory)."""
        return PluginContext(
            http=self.http,
            kafka=self.kafka,
            state_dir=self._state_dir / destination_id,
            registry=self._registry,
        )

    def _build_plugins(self) -> dict[str, AnyPlugin]:
        """Build every destination's plugin; raises before anything touches Kafka."""
        plugins: dict[str, AnyPlugin] = {}
        for dest in self.destinations:
            plugin_class = get_plugin(dest.type)
            try:
                plugins[dest.id] = plugin_class(dest, self.context_for(dest.id))
            except InvalidSettings as exc:
                raise InvalidSettings(
                    f"destination {dest.id!r}: {exc.message}", exc.problems
                ) from None
        return plugins

    async def start(self) -> None:
        if self._started:
            return
        plugins = self._build_plugins()
        self._started = True
        gc_tuning.acquire()
        try:
            await self.http.start()
            names: list[str] = [self.topics.status, self.topics.suppressions]
            for dest in self.destinations:
                names += [
                    self.topics.destination(dest.id),
                    self.topics.retry(dest.id),
                    self.topics.dead_letter(dest.id),
                ]
            await ensure_topics(self.kafka, names)
            await asyncio.gather(*(plugin.start() for plugin in plugins.values()))
            await self._suppression_tail.start()
            self._plugins = plugins
            producer = make_producer(self.kafka, role="deliver")
            await producer.start()
            self._producer = producer
            sender = BatchSender(producer)
            for dest in self.destinations:
                self.lanes[dest.id] = DestinationLane(
                    dest,
                    plugins[dest.id],
                    kafka=self.kafka,
                    topics=self.topics,
                    sender=sender,
                    metrics=self.metrics,
                    commit_interval=self.commit_interval,
                    stall_after=self.stall_after,
                    consumer_options=self.consumer_options,
                    suppressed=self.suppressions.users,
                )
            # Together: each lane's first group join takes seconds, and they are independent.
            results = await asyncio.gather(
                *(lane.start() for lane in self.lanes.values()), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            await self.stop(grace=5.0)
            raise
        self._checks = asyncio.create_task(self._health_checks(plugins), name="deliver-checks")

    async def probe(self) -> dict[str, tuple[bool, str]]:
        """Each running destination's plugin health check (reachable, settings accepted)."""
        checks = await asyncio.gather(*(lane.plugin.health_check() for lane in self.lanes.values()))
        return dict(zip(self.lanes, checks, strict=True))

    async def _health_checks(self, plugins: Mapping[str, AnyPlugin]) -> None:
        """Tell operators early about a partner that cannot be reached (never blocks start)."""
        for dest_id, plugin in plugins.items():
            healthy, detail = await plugin.health_check()
            if healthy:
                logger.info("destination %s: %s", dest_id, detail)
            else:
                logger.warning("destination %s may be unreachable: %s", dest_id, detail)

    async def stop(self, grace: float | None = None) -> None:
        """Stop every lane within ``grace`` seconds (default: the agent's), then close clients."""
        if not self._started:
            return
        self._started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.grace if grace is None else grace)
        if self._checks is not None:
            self._checks.cancel()
            await asyncio.gather(self._checks, return_exceptions=True)
            self._checks = None
        # Leave a little of the grace for the producer and the HTTP session.
        lane_deadline = deadline - min(2.0, (deadline - loop.time()) * 0.1)
        await asyncio.gather(*(lane.stop(lane_deadline) for lane in self.lanes.values()))
        await self._suppression_tail.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                async with asyncio.timeout(max(0.5, deadline - loop.time())):
                    await producer.stop()
            except TimeoutError:
                logger.warning("delivery producer did not stop in time")
        plugins, self._plugins = self._plugins, {}
        for dest_id, plugin in plugins.items():
            try:
                async with asyncio.timeout(max(0.5, deadline - loop.time())):
                    await plugin.stop()
            except Exception:
                logger.exception("destination %s did not stop cleanly", dest_id)
        await self.http.close()
        gc_tuning.release()

    async def flush_now(self) -> None:
        """Every lane sends its partial batches at once from now on (draining to stop)."""
        await asyncio.gather(*(lane.flush_now() for lane in self.lanes.values()))

    def failure(self) -> str | None:
        """The first lane that stopped delivering for good, if any."""
        following = self._suppression_tail.failure()
        if following:
            return following
        for lane in self.lanes.values():
            reason = lane.failure()
            if reason:
                return reason
        return None

    def health(self) -> tuple[bool, str]:
        if not self.lanes:
            return True, "starting"
        results = {dest_id: lane.health() for dest_id, lane in self.lanes.items()}
        healthy = all(ok for ok, _ in results.values())
        detail = "; ".join(f"{dest_id}: {text}" for dest_id, (_, text) in results.items())
        return healthy, detail
