"""Customer.io (Journeys) through its Track API: people, events, page/screen views, objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from destinations.base import (
    DestinationError,
    Encoded,
    Event,
    PartnerRequest,
    PartnerResponse,
    PluginContext,
)
from destinations.customerio import responses
from destinations.customerio.config import CustomerIOSettings
from destinations.customerio.encoder import CustomerIOEncoder, event_ulid
from destinations.http import HttpDestination
from destinations.registry import register
from router.config import Destination

__all__ = ["CustomerIODestination", "CustomerIOSettings", "event_ulid"]


@register("customerio")
class CustomerIODestination(HttpDestination[CustomerIOSettings]):
    settings_model = CustomerIOSettings
    summary = "Customer.io Track API: identify, track, page, screen, group (objects)"
    # alias is left out on purpose: Customer.io's merge deletes the secondary person for good,
    # and anonymous history already joins the person through the anonymous_id attribute.
    call_types = frozenset({"identify", "track", "page", "screen", "group"})
    default_batch_size = 100
    max_batch_size = 1000

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        self.encoder = CustomerIOEncoder(self.settings, options_for=self.options_for)

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        return self.encoder.encode(events)

    def check(
        self, request: PartnerRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        return responses.check(request, response)

    def delete_user(self, user_id: str) -> PartnerRequest:
        """The request that deletes a person (by ``id``) and everything about them."""
        return self.encoder.delete_person(user_id)

    def deletion_request(self, user_id: str) -> PartnerRequest:
        """Track API ``/api/v2/batch`` with one ``person`` ``delete`` operation identified by
        ``id`` (the userId), with the Track API credentials: Customer.io deletes the person
        and their data (a 207 naming the operation is a refusal)."""
        return self.delete_user(user_id)

    async def health_check(self) -> tuple[bool, str]:
        """Ask the Track API for the account's region: only valid credentials get an answer."""
        request = self.encoder.region_request()
        try:
            response = await self.http.send(request, time_limit=min(self.timeout, 5.0))
        except DestinationError as exc:
            return False, self.describe_text(exc.message)
        if response.status in (401, 403):
            return False, f"Customer.io refused the Track API credentials (HTTP {response.status})"
        if response.status >= 400:
            return False, f"Customer.io answered HTTP {response.status}"
        region = _answered_region(response.body)
        if region is not None and region != self.settings.region and self.settings.url is None:
            return False, (
                f"the Customer.io account is in region {region!r} but settings.region is "
                f"{self.settings.region!r}"
            )
        return True, f"Customer.io accepts the Track API credentials ({region or 'region unknown'})"


def _answered_region(body: bytes) -> str | None:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    region = decoded.get("region") if isinstance(decoded, dict) else None
    return region if isinstance(region, str) else None
