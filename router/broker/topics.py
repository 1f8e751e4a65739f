"""Every topic the router uses, named in one place, and created explicitly at start."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router.config import KafkaSettings, Workspace

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; ``prefix`` lets several workspaces (or tests) share one cluster."""

    prefix: str = ""

    @property
    def raw(self) -> str:
        return f"{self.prefix}events.raw"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}events.dlq"

    @property
    def violations(self) -> str:
        return f"{self.prefix}events.violations"

    @property
    def status(self) -> str:
        return f"{self.prefix}delivery.status"

    @property
    def schema(self) -> str:
        """Source schemas, one record per (source, processor instance); compacted."""
        return f"{self.prefix}sources.schema"

    @property
    def suppressions(self) -> str:
        """Suppressed user ids (privacy), key = userId; a tombstone unsuppresses; compacted."""
        return f"{self.prefix}privacy.suppressions"

    @property
    def regulations(self) -> str:
        """Privacy regulations (suppress, delete) and their progress, key = id; compacted."""
        return f"{self.prefix}privacy.regulations"

    @property
    def compacted(self) -> frozenset[str]:
        """Topics that keep the latest record per key rather than records for a time."""
        return frozenset({self.schema, self.suppressions, self.regulations})

    def destination(self, destination_id: str) -> str:
        return f"{self.prefix}dest.{destination_id}"

    def retry(self, destination_id: str) -> str:
        return f"{self.prefix}dest.{destination_id}.retry"

    def dead_letter(self, destination_id: str) -> str:
        return f"{self.prefix}dest.{destination_id}.dlq"

    def for_workspace(self, workspace: Workspace) -> list[str]:
        names = [self.raw, self.dlq, self.violations, self.status, self.schema]
        names += [self.suppressions, self.regulations]
        for dest in workspace.destinations:
            names += [
                self.destination(dest.id),
                self.retry(dest.id),
                self.dead_letter(dest.id),
            ]
        return names


def topics_for(settings: KafkaSettings) -> Topics:
    return Topics(settings.topic_prefix)


async def ensure_topics(settings: KafkaSettings, names: Iterable[str]) -> None:
    """Create missing topics with the configured partitions and replication; keep existing ones.

    Consumers of a topic that does not exist yet would silently wait, and auto-created
    topics get the broker's defaults, so every role calls this before it starts. Compacted
    topics (:attr:`Topics.compacted`) are created with ``cleanup.policy=compact``.
    """
    compacted = topics_for(settings).compacted
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.client_id}-admin"
    )
    await admin.start()
    try:
        wanted = sorted(set(names))
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [
                NewTopic(
                    n,
                    settings.partitions,
                    settings.replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if n in compacted else None,
                )
                for n in missing
            ]
        )
        for topic, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: {message} (error {code})")
        logger.info("created topics: %s", ", ".join(missing))
    finally:
        await admin.close()
