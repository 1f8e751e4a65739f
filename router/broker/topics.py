"""Every topic the router uses, named in one place, and created explicitly at start."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
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
    def rekeyed(self) -> str:
        """Internal: records of events.raw moved into their user's partition (processor)."""
        return f"{self.prefix}events.rekeyed"

    @property
    def dedup_changelog(self) -> str:
        """Internal: each processor batch's first-seen dedup keys, per partition."""
        return f"{self.prefix}dedup.changelog"

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
        names += [self.rekeyed, self.dedup_changelog]
        names += [self.suppressions, self.regulations]
        for dest in workspace.destinations:
            names += [
                self.destination(dest.id),
                self.retry(dest.id),
                self.dead_letter(dest.id),
            ]
        return names

    @property
    def internal(self) -> tuple[str, str]:
        """The processor's own topics, partitioned exactly as events.raw (one per dedup store)."""
        return (self.rekeyed, self.dedup_changelog)

    def configs(self, workspace: Workspace) -> dict[str, dict[str, str]]:
        """Topic configs the router sets when it creates a topic (others: broker defaults)."""
        window_ms = int(workspace.processor.dedup_window * 1000)
        return {
            # Restores read the whole retained changelog when a store is new: keep the window
            # and an hour, in hour-long segments so old entries go away soon after.
            self.dedup_changelog: {
                "cleanup.policy": "delete",
                "retention.ms": str(window_ms + 3_600_000),
                "segment.ms": str(max(60_000, min(3_600_000, window_ms))),
            },
        }


def topics_for(settings: KafkaSettings) -> Topics:
    return Topics(settings.topic_prefix)


async def ensure_topics(
    settings: KafkaSettings,
    names: Iterable[str],
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create missing topics with the configured partitions and replication; keep existing ones.

    Consumers of a topic that does not exist yet would silently wait, and auto-created
    topics get the broker's defaults, so every role calls this before it starts. Compacted
    topics (:attr:`Topics.compacted`) are created with ``cleanup.policy=compact``; ``configs``
    gives topic configs for some others (used only when this call creates the topic).
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
                    topic_configs=(
                        {"cleanup.policy": "compact"}
                        if n in compacted
                        else dict((configs or {}).get(n, {})) or None
                    ),
                )
                for n in missing
            ]
        )
        created = []
        for topic, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: {message} (error {code})")
            if code == 0:
                created.append(topic)
        # Roles starting together (``router run``) race to create the same topics: each names
        # only those it created, so every topic is logged once.
        if created:
            logger.info("created topics: %s", ", ".join(sorted(created)))
    finally:
        await admin.close()
