"""Amplitude: events, user properties and groups through the HTTP V2 API; privacy deletion
through the User Privacy API."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import orjson

from destinations.amplitude.config import AmplitudeSettings
from destinations.amplitude.encoder import MAX_EVENTS, AmplitudeEncoder
from destinations.amplitude.responses import check_response
from destinations.base import (
    DeletionUnsupported,
    DestinationError,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
)
from destinations.http import ItemizedDestination
from destinations.registry import register
from destinations.segment import ItemizedRequest
from router.config import Destination

__all__ = ["AmplitudeDestination", "AmplitudeSettings"]


@register("amplitude")
class AmplitudeDestination(ItemizedDestination[AmplitudeSettings]):
    settings_model = AmplitudeSettings
    summary = "Amplitude HTTP V2: events, revenue, user properties, groups; per-user throttling"
    call_types = frozenset({"track", "page", "screen", "identify", "group"})
    default_batch_size = 100
    max_batch_size = MAX_EVENTS

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = AmplitudeEncoder(self.settings, self.options_for)

    def check_items(
        self, request: ItemizedRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        return check_response(request, response)

    def deletion_request(self, user_id: str) -> PartnerRequest | DeletionUnsupported:
        """``POST /api/2/deletions/users`` (User Privacy API, v1): Basic auth
        ``api_key:secret_key``, ``{"user_ids": [...], "ignore_invalid_id": "True"}`` (a user
        this project never saw is skipped instead of failing the job; Amplitude reads its
        boolean options as strings), plus ``requester`` when set. Amplitude answers 200 with
        the scheduled job and deletes within its deletion window."""
        settings = self.settings
        if settings.secret_key is None:
            return DeletionUnsupported(
                "Amplitude's User Privacy API needs settings.secret_key (the project's secret key)"
            )
        credentials = (
            f"{settings.api_key.get_secret_value()}:{settings.secret_key.get_secret_value()}"
        )
        body: dict[str, object] = {"user_ids": [user_id], "ignore_invalid_id": "True"}
        if settings.deletion_requester:
            body["requester"] = settings.deletion_requester
        return PartnerRequest(
            method="POST",
            url=settings.deletion_url,
            headers=(
                ("Content-Type", "application/json"),
                ("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode()),
            ),
            body=orjson.dumps(body),
        )

    async def health_check(self) -> tuple[bool, str]:
        return await self.http.probe(self.settings.url, time_limit=min(self.timeout, 5.0))
