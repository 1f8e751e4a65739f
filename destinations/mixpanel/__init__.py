"""Mixpanel: events through /import, profiles through /engage, groups through /groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from destinations.base import (
    DestinationError,
    Encoded,
    Event,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
)
from destinations.http import HttpDestination, raise_for_status
from destinations.mixpanel.config import MixpanelSettings
from destinations.mixpanel.encoder import MAX_ITEMS, MixpanelEncoder
from destinations.mixpanel.responses import check_response
from destinations.registry import register
from destinations.segment import ItemizedRequest
from router.config import Destination

__all__ = ["MixpanelDestination", "MixpanelSettings"]


@register("mixpanel")
class MixpanelDestination(HttpDestination[MixpanelSettings]):
    settings_model = MixpanelSettings
    summary = "Mixpanel: events via /import (per-event errors), profiles, groups, ID merge"
    call_types = frozenset({"track", "page", "screen", "identify", "group", "alias"})
    default_batch_size = 500
    max_batch_size = MAX_ITEMS

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = MixpanelEncoder(self.settings, self.options_for)

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
        return await self.http.probe(self.settings.base_url, time_limit=min(self.timeout, 5.0))
