"""A test-only destination type, registered by decorator like any third-party one."""

from __future__ import annotations

from collections.abc import Sequence

from destinations.base import Encoded, EncodeError, Event, PartnerRequest
from destinations.registry import register
from destinations.webhook import WebhookDestination


@register("test-picky")
class PickyWebhook(WebhookDestination):
    """A webhook that cannot encode events whose ``properties.behavior`` is "unencodable"."""

    def encode(self, events: Sequence[Event]) -> PartnerRequest:
        for event in events:
            if event.get("properties", {}).get("behavior") == "unencodable":
                raise EncodeError(f"event {event.get('messageId')} cannot be encoded")
        return super().encode(events)


@register("test-track-only")
class TrackOnlyWebhook(WebhookDestination):
    """A webhook whose partner takes track calls only."""

    call_types = frozenset({"track"})


@register("test-choosy")
class ChoosyWebhook(WebhookDestination):
    """A webhook whose settings choose only events whose ``properties.behavior`` is "ok"."""

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        requests: list[PartnerRequest] = []
        skipped: dict[int, str] = {}
        for i, event in enumerate(events):
            if event.get("properties", {}).get("behavior") != "ok":
                skipped[i] = "not_chosen"
                continue
            one = super().encode([event])
            requests.append(
                PartnerRequest(one.method, one.url, one.headers, one.body, one.message_ids, (i,))
            )
        return Encoded(requests, {}, skipped)
