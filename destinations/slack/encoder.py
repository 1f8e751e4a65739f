"""Chosen Segment events -> one Slack incoming-webhook message each (pure).

The body is ``{"text": <rendered template>}`` plus ``username``, ``icon_emoji``,
``icon_url`` and ``channel`` when set. The template sees the event's fields
(``{{event}}``, ``{{userId}}``, ``{{properties.total}}``, ``{{traits.email}}``,
``{{context.page.url}}``) and ``{{name}}``: the person's name (traits ``name``, else first
and last name, else email, else userId or anonymousId).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pystache.parsed import ParsedTemplate

from destinations.base import (
    DestinationError,
    Encoded,
    EncodeError,
    Event,
    PartnerRequest,
    UnsupportedType,
)
from destinations.segment import anonymous_id, context_traits, message_id, properties_of, text
from destinations.segment import user_id as segment_user_id
from destinations.slack.config import SlackSettings
from destinations.slack.template import compile_template, render

#: Slack truncates longer messages; cutting here keeps the cut visible.
MAX_TEXT = 40_000


def display_name(event: Event) -> str:
    traits = {
        **context_traits(event),
        **(properties_of(event) if event.get("type") == "identify" else {}),
    }
    name = text(traits.get("name"))
    if name:
        return name
    first = text(traits.get("firstName") or traits.get("first_name"))
    last = text(traits.get("lastName") or traits.get("last_name"))
    if first or last:
        return " ".join(p for p in (first, last) if p)
    return text(traits.get("email")) or segment_user_id(event) or anonymous_id(event) or ""


#: The filtered reason of events the settings give no message (no template).
NOT_CHOSEN = "not_chosen"


class SlackEncoder:
    def __init__(self, settings: SlackSettings) -> None:
        self.url = settings.webhook_url.get_secret_value()
        self.templates = {k: compile_template(v) for k, v in settings.templates.items()}
        self.identify = (
            compile_template(settings.identify_template) if settings.identify_template else None
        )
        self.default = (
            compile_template(settings.default_template) if settings.default_template else None
        )
        extras: dict[str, Any] = {
            "username": settings.username,
            "icon_emoji": settings.icon_emoji,
            "icon_url": str(settings.icon_url) if settings.icon_url else None,
            "channel": settings.channel,
        }
        self.extras = {k: v for k, v in extras.items() if v is not None}
        self.headers = (("Content-Type", "application/json"),)

    def template_for(self, event: Event) -> ParsedTemplate | None:
        """The event's template; None when the settings chose no message for it."""
        kind = event.get("type")
        if kind == "identify":
            return self.identify
        if kind != "track":
            raise UnsupportedType(f"Slack takes no {kind!r} calls")
        name = text(event.get("event")) or ""
        return self.templates.get(name, self.default)

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        """One message (one request) per event, whatever the batch's size; an event that
        cannot become a message fails alone."""
        if not events:
            raise ValueError("nothing to encode")
        requests: list[PartnerRequest] = []
        failed: dict[int, DestinationError] = {}
        skipped: dict[int, str] = {}
        for position, event in enumerate(events):
            try:
                template = self.template_for(event)
                if template is None:
                    skipped[position] = NOT_CHOSEN  # counted as filtered, not a failure
                    continue
                requests.append(self.message(event, template, position))
            except DestinationError as exc:
                failed[position] = exc
        return Encoded(requests, failed, skipped)

    def message(self, event: Event, template: ParsedTemplate, position: int) -> PartnerRequest:
        message = render(template, {"name": display_name(event)}, event)
        if len(message) > MAX_TEXT:
            message = message[: MAX_TEXT - 1] + "…"
        if not message.strip():
            raise EncodeError("the template rendered an empty message", reason="empty_message")
        body = orjson.dumps({"text": message, **self.extras})
        return PartnerRequest(
            method="POST",
            url=self.url,
            headers=self.headers,
            body=body,
            message_ids=(message_id(event),),
            covers=(position,),
        )
