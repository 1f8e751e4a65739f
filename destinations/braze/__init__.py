"""Braze through its REST API: user attributes, custom events and purchases."""

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
from destinations.braze import responses
from destinations.braze.config import BrazeSettings
from destinations.braze.encoder import BrazeEncoder, BrazeRequest
from destinations.http import HttpDestination
from destinations.registry import register
from router.config import Destination

__all__ = ["BrazeDestination", "BrazeRequest", "BrazeSettings"]


@register("braze")
class BrazeDestination(HttpDestination[BrazeSettings]):
    settings_model = BrazeSettings
    summary = "Braze /users/track: identify -> attributes, track -> events and purchases, group"
    # page/screen are left out: Braze bills every custom event as data points, and Segment's
    # Braze destination sends them only from device mode. alias needs /users/identify or
    # /users/merge, which change profiles for good.
    call_types = frozenset({"identify", "track", "group"})
    default_batch_size = 75
    max_batch_size = 750

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = BrazeEncoder(self.settings, options_for=self.options_for)

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        encoded = self.encoder.encode(events)
        return Encoded(list(encoded.requests), encoded.failed)

    def check(
        self, request: PartnerRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        if not isinstance(request, BrazeRequest):
            return super().check(request, response)  # e.g. a /users/delete request
        return responses.check(request, response)

    def delete_user(self, user_id: str) -> PartnerRequest:
        """``POST /users/delete`` for one ``external_id``."""
        return self.encoder.delete_users([user_id])

    def deletion_request(self, user_id: str) -> PartnerRequest:
        """``POST /users/delete`` with ``{"external_ids": [userId]}`` (the REST API key needs
        the ``users.delete`` permission; Braze answers 201 and deletes the profile)."""
        return self.delete_user(user_id)

    async def health_check(self) -> tuple[bool, str]:
        """Braze has no side-effect-free credentials check: probe the REST host."""
        return await self.http.probe(self.settings.base_url, time_limit=min(self.timeout, 5.0))
