"""The generic webhook: POST each event (or batch) as JSON, optionally signed."""

from __future__ import annotations

from collections.abc import Sequence

from destinations.base import Event, PartnerRequest, PartnerResponse, PluginContext
from destinations.http import HttpDestination
from destinations.registry import register
from destinations.webhook.config import WebhookSettings
from destinations.webhook.encoder import WebhookEncoder, sign
from destinations.webhook.sender import WebhookSender
from router.config import Destination

__all__ = ["WebhookDestination", "WebhookSettings", "sign"]


@register("webhook")
class WebhookDestination(HttpDestination[WebhookSettings]):
    settings_model = WebhookSettings
    summary = "POST each event (or a batch) as Segment JSON to a URL, optionally signed"
    deletion_unsupported = (
        "a webhook has no deletion API: the receiving service must delete the user itself"
    )
    accepts_idempotency_key = True
    # The body is the events' JSON as read from Kafka, spliced: nothing to decode.
    reads_events = False

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = WebhookEncoder(self.settings, batched=self.batch_size > 1)
        self.sender = WebhookSender(self.settings, context.http, timeout=self.timeout)

    def encode(self, events: Sequence[Event]) -> PartnerRequest:
        return self.encoder.encode(events)

    async def send(self, request: PartnerRequest) -> PartnerResponse:
        return await self.sender.send(request)

    async def health_check(self) -> tuple[bool, str]:
        return await self.sender.health_check()

    def sensitive_headers(self) -> frozenset[str]:
        # Every configured header is masked: they exist to carry credentials.
        return frozenset(name.lower() for name in self.settings.headers)
