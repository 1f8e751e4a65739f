"""Amplitude: events, user properties and groups through the HTTP V2 API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from destinations.amplitude.config import AmplitudeSettings
from destinations.amplitude.encoder import MAX_EVENTS, AmplitudeEncoder
from destinations.amplitude.responses import check_response
from destinations.base import (
    DestinationError,
    Encoded,
    Event,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
)
from destinations.http import HttpDestination, raise_for_status
from destinations.registry import register
from destinations.segment import ItemizedRequest
from router.config import Destination

__all__ = ["AmplitudeDestination", "AmplitudeSettings"]


@register("amplitude")
class AmplitudeDestination(HttpDestination[AmplitudeSettings]):
    settings_model = AmplitudeSettings
    summary = "Amplitude HTTP V2: events, revenue, user properties, groups; per-user throttling"
    call_types = frozenset({"track", "page", "screen", "identify", "group"})
    default_batch_size = 100
    max_batch_size = MAX_EVENTS

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = AmplitudeEncoder(self.settings, self.options_for)

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        encoded = self.encoder.encode(events)
        return Encoded(list(encoded.requests), encoded.failed)

    def check(
        self, request: PartnerRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        if isinstance(request, ItemizedRequest):
            return check_response(request, response)
        raise_for_status(request, response)
        return {}

    async def health_check(self) -> tuple[bool, str]:
        return await self.http.probe(self.settings.url, time_limit=min(self.timeout, 5.0))
