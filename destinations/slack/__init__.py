"""Slack: a message per chosen event through an incoming webhook, from a safe template."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from destinations.base import Encoded, Event, PartnerRequest, PluginContext
from destinations.http import HttpDestination
from destinations.registry import register
from destinations.slack.config import SlackSettings
from destinations.slack.encoder import SlackEncoder
from router.config import Destination

__all__ = ["SlackDestination", "SlackSettings"]


@register("slack")
class SlackDestination(HttpDestination[SlackSettings]):
    settings_model = SlackSettings
    summary = "Slack incoming webhook: one message per chosen event from a Mustache template"
    deletion_unsupported = (
        "Slack messages posted through an incoming webhook cannot be found and deleted "
        "again by the router: remove them in Slack"
    )
    call_types = frozenset({"track", "identify"})
    # One message per event; a larger delivery.batch_size just sends them in a row.
    default_batch_size = 1
    max_batch_size = 100

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = SlackEncoder(self.settings)

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        return self.encoder.encode(events)

    async def health_check(self) -> tuple[bool, str]:
        # Only reachability: posting would put a message in the channel.
        parts = urlsplit(self.encoder.url)
        origin = f"{parts.scheme}://{parts.netloc}/"
        return await self.http.probe(origin, time_limit=min(self.timeout, 5.0))
