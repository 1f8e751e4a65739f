"""Google Analytics 4 through the Measurement Protocol (web data streams)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from destinations.base import (
    DestinationError,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
)
from destinations.ga4.config import GA4Settings
from destinations.ga4.encoder import GA4Encoder
from destinations.ga4.names import MAX_EVENTS
from destinations.ga4.responses import check_response
from destinations.http import ItemizedDestination
from destinations.registry import register
from destinations.segment import ItemizedRequest
from router.config import Destination

__all__ = ["GA4Destination", "GA4Settings"]


@register("ga4")
class GA4Destination(ItemizedDestination[GA4Settings]):
    settings_model = GA4Settings
    summary = "Google Analytics 4 Measurement Protocol: e-commerce -> recommended events, pages"
    deletion_unsupported = (
        "GA4's User Deletion API (Analytics Admin API) needs Google OAuth credentials, "
        "which this destination does not hold: delete the user in Google Analytics"
    )
    encoder: GA4Encoder
    call_types = frozenset({"track", "page"})
    default_batch_size = 1
    max_batch_size = MAX_EVENTS

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = GA4Encoder(self.settings, self.options_for)

    def check_items(
        self, request: ItemizedRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        return check_response(request, response)

    def event_tester_request(self, request: PartnerRequest) -> PartnerRequest:
        """The same request to GA4's validation server, with recommendations enforced."""
        body = orjson.loads(request.body)
        body["validation_behavior"] = "ENFORCE_RECOMMENDATIONS"
        owners = request.owners if isinstance(request, ItemizedRequest) else ()
        return ItemizedRequest(
            method=request.method,
            url=self.encoder.debug_url,
            headers=request.headers,
            body=orjson.dumps(body),
            message_ids=request.message_ids,
            covers=request.covers,
            owners=owners,
            endpoint="debug",
        )

    async def health_check(self) -> tuple[bool, str]:
        return await self.http.probe(self.settings.base_url, time_limit=min(self.timeout, 5.0))
