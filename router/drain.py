"""Finishing what an in-memory broker holds before it stops (``router run`` on SIGTERM).

The embedded broker keeps every topic in memory and stops with the router, so a clean stop
that merely committed offsets would still lose whatever the topics hold. With the embedded
broker, SIGTERM (or Ctrl-C) therefore first drains:

1. intake stops: the gateway answers 503 ``shutting_down`` to every new request while its
   listener stays open (every Segment client retries a 503), requests in flight finish, and
   the demo traffic stops;
2. the processor and the delivery agents keep working until their consumer groups have
   committed everything in ``events.raw``, ``dest.<id>`` and ``dest.<id>.retry``, or until
   the deadline (a retry that is not due before it stays behind); destinations that batch
   by time (``flush_interval``) send what they hold at once instead of waiting;
3. then the host stops every role, counts what is left with :meth:`Drain.backlog` and logs it.

Nothing here applies to a real Kafka cluster: there, the topics outlive the process and the
next one continues from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from router.broker.backlog import uncommitted
from router.config import KafkaSettings
from router.delivery.agent import DeliveryAgent
from router.demo import DemoTraffic
from router.gateway.server import Gateway
from router.processor import Processor
from router.roles import Role

logger = logging.getLogger(__name__)

#: Seconds between two backlog checks while draining.
CHECK_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class Backlog:
    """Records not finished yet: not processed (``events.raw``), not delivered (per agent)."""

    unprocessed: int
    undelivered: int

    @property
    def total(self) -> int:
        return self.unprocessed + self.undelivered

    def describe(self) -> str:
        return (
            f"{self.unprocessed} not processed (events.raw), "
            f"{self.undelivered} not delivered (dest.* and retries)"
        )


class Drain:
    """Drains the roles of one process; see the module docstring."""

    def __init__(self, kafka: KafkaSettings, roles: Sequence[Role]) -> None:
        self.kafka = kafka
        self.roles = list(roles)

    def _groups(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Consumer groups of the processor and of the delivery lanes, with their topics."""
        processing: dict[str, list[str]] = {}
        delivering: dict[str, list[str]] = {}
        for role in self.roles:
            if isinstance(role, Processor):
                processing[role.group_id] = [role.topics.raw]
            elif isinstance(role, DeliveryAgent):
                for lane in role.lanes.values():
                    delivering[lane.group_id] = [lane.topic, lane.retry_topic]
        return processing, delivering

    async def backlog(self) -> Backlog:
        """What the hosted roles' consumer groups have not committed yet."""
        processing, delivering = self._groups()
        counts = await uncommitted(self.kafka, {**processing, **delivering})
        return Backlog(
            unprocessed=sum(counts[group] for group in processing),
            undelivered=sum(counts[group] for group in delivering),
        )

    async def run(self, deadline: float) -> Backlog | None:
        """Stop intake, then wait until nothing is left or ``deadline`` (``loop.time()``).

        Returns the last backlog seen (None if the broker could not be asked).
        """
        loop = asyncio.get_running_loop()
        intake = [role for role in self.roles if isinstance(role, Gateway | DemoTraffic)]
        for role in intake:
            if isinstance(role, Gateway):
                still = await role.drain()
                if still:
                    logger.warning("%d gateway request(s) still in flight", still)
            else:
                await role.stop()
        for agent in self.roles:
            if isinstance(agent, DeliveryAgent):
                # Loaders wait up to flush_interval to fill a batch: nothing more is coming.
                await agent.flush_now()
        last: Backlog | None = None
        announced = False
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    last = await self.backlog()
            except (KafkaError, TimeoutError) as exc:
                logger.warning("cannot read the backlog from the broker: %r", exc)
            if last is not None and last.total == 0:
                return last
            if loop.time() + CHECK_INTERVAL >= deadline:
                return last
            if not announced and last is not None:
                logger.info("draining the embedded broker: %s", last.describe())
                announced = True
            await asyncio.sleep(CHECK_INTERVAL)
