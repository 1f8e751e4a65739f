"""What the Measurement Protocol answers, and what the validation server explains.

``/mp/collect`` answers 2xx whenever it received the request, even when Google Analytics
will not process the events in it: a 2xx is all a delivery can learn, so it counts as
delivered (which is why the encoder refuses, visibly, what GA4 would drop silently). Other
statuses follow the shared HTTP rules.

``/debug/mp/collect`` (the validation server, used by ``router destinations test``)
answers 200 with ``{"validationMessages": [{"fieldPath", "description",
"validationCode"}]}``; a message that names ``index: [N]`` refuses that event, any other
refuses the whole request.
"""

from __future__ import annotations

import re

import orjson

from destinations.base import DestinationError, PartnerResponse, PermanentError
from destinations.http import raise_for_status
from destinations.segment import ItemizedRequest

_INDEX = re.compile(r"index: \[(\d+)\]")


def check_response(
    request: ItemizedRequest, response: PartnerResponse
) -> dict[int, DestinationError]:
    raise_for_status(request, response)
    if request.endpoint != "debug":
        return {}
    try:
        parsed = orjson.loads(response.body) if response.body else {}
    except orjson.JSONDecodeError:
        parsed = {}
    messages = parsed.get("validationMessages") if isinstance(parsed, dict) else None
    if not isinstance(messages, list) or not messages:
        return {}
    refused: dict[int, DestinationError] = {}
    whole: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        code = message.get("validationCode") or "INVALID"
        description = message.get("description") or ""
        summary = f"{code} at {message.get('fieldPath') or 'request'}: {description}"
        found = _INDEX.search(description)
        index = int(found.group(1)) if found else -1
        if 0 <= index < len(request.owners):
            refused[request.owners[index]] = PermanentError(
                f"GA4 validation: {summary}",
                reason="invalid_event",
                request=request,
                response=response,
            )
        else:
            whole.append(summary)
    if whole:
        raise PermanentError(
            "GA4 validation: " + "; ".join(whole),
            reason="invalid_event",
            request=request,
            response=response,
        )
    return refused
