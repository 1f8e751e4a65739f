"""Mixpanel: events through /import, profiles through /engage, groups through /groups;
privacy deletion through the GDPR API."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import orjson

from destinations.base import (
    DeletionUnsupported,
    DestinationError,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
    RejectedStatus,
)
from destinations.http import ItemizedDestination
from destinations.mixpanel.config import MixpanelSettings
from destinations.mixpanel.encoder import MAX_ITEMS, MixpanelEncoder
from destinations.mixpanel.responses import check_response
from destinations.registry import register
from destinations.segment import ItemizedRequest
from router.config import Destination

__all__ = ["MixpanelDestination", "MixpanelSettings"]

DELETIONS_PATH = "/api/app/data-deletions/v3.0/"


def _check_deletion(request: PartnerRequest, response: PartnerResponse) -> None:
    """A 2xx whose body says ``"status": "error"`` is a refusal too."""
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return
    if isinstance(body, dict) and body.get("status") == "error":
        raise RejectedStatus(
            f"Mixpanel refused the deletion: {body.get('error')}",
            reason="rejected",
            request=request,
            response=response,
        )


@register("mixpanel")
class MixpanelDestination(ItemizedDestination[MixpanelSettings]):
    settings_model = MixpanelSettings
    summary = "Mixpanel: events via /import (per-event errors), profiles, groups, ID merge"
    call_types = frozenset({"track", "page", "screen", "identify", "group", "alias"})
    default_batch_size = 500
    max_batch_size = MAX_ITEMS

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = MixpanelEncoder(self.settings, self.options_for)

    def check_items(
        self, request: ItemizedRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        return check_response(request, response)

    def check(
        self, request: PartnerRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        failures = super().check(request, response)
        if DELETIONS_PATH in request.url and not isinstance(request, ItemizedRequest):
            _check_deletion(request, response)
        return failures

    def deletion_request(self, user_id: str) -> PartnerRequest | DeletionUnsupported:
        """``POST /api/app/data-deletions/v3.0/?token=<project token>`` (GDPR API v3):
        ``Authorization: Bearer <gdpr_token>``, ``{"distinct_ids": [userId],
        "compliance_type": "GDPR"}``. The distinct id of an identified user is the userId
        (this destination sends it as such). Mixpanel answers ``{"status": "ok", "results":
        [{"tracking_id", "status": "PENDING", ...}]}`` and deletes within 30 days."""
        settings = self.settings
        if settings.gdpr_token is None:
            return DeletionUnsupported(
                "Mixpanel's GDPR API needs settings.gdpr_token (an OAuth token for GDPR APIs)"
            )
        query = urlencode({"token": settings.project_token.get_secret_value()})
        body = {"distinct_ids": [user_id], "compliance_type": settings.compliance_type}
        return PartnerRequest(
            method="POST",
            url=f"{settings.deletion_base}{DELETIONS_PATH}?{query}",
            headers=(
                ("Content-Type", "application/json"),
                ("Authorization", f"Bearer {settings.gdpr_token.get_secret_value()}"),
            ),
            body=orjson.dumps(body),
        )

    async def health_check(self) -> tuple[bool, str]:
        return await self.http.probe(self.settings.base_url, time_limit=min(self.timeout, 5.0))
