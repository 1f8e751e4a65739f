"""Customer.io's answers -> delivered / retryable / permanent, per operation where it reports so.

From the Track API reference: ``/api/v2/batch`` answers 200 (``{}``) when every operation was
accepted, 207 when some were invalid (``{"errors": [{"batch_index", "reason", "field",
"message"}]}``, ``batch_index`` 0-based; every other operation *was* accepted), 400 when the
whole request is malformed, 401 for bad credentials; ``/api/v1/events`` answers 200, 400
(``{"meta": {"error": ...}}``) or 401. Like every Track API call, both answer 429 past the
fair-use rate (100 requests per second per workspace), and 5xx when Customer.io is failing.

So: a refused operation is dead-lettered alone with Customer.io's reason (retrying invalid
data cannot succeed) and the rest count as delivered; statuses follow the shared rules
(429/5xx retried, honouring ``Retry-After``; other 4xx dead-lettered).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from destinations.base import (
    DestinationError,
    PartnerRequest,
    PartnerResponse,
    PermanentError,
)
from destinations.customerio.encoder import BATCH_PATH
from destinations.http import raise_for_status


class OperationRejected(PermanentError):
    """Customer.io refused one operation of a batch (listed in a 207 answer)."""

    reason = "rejected_item"


class UnreadableAnswer(PermanentError):
    """A 207 whose body does not say which operations failed."""

    reason = "unreadable_response"


def check(request: PartnerRequest, response: PartnerResponse) -> Mapping[int, DestinationError]:
    """Raise for a refused request; else the refused operations (indexes into ``covers``)."""
    raise_for_status(request, response)
    if urlsplit(request.url).path != BATCH_PATH:
        return {}
    errors = _errors(response.body)
    if errors is None:
        if response.status == 207:
            raise UnreadableAnswer(
                "Customer.io answered 207 (some operations refused) without a readable "
                "errors list; which events it accepted is unknown",
                request=request,
                response=response,
            )
        return {}
    count = len(request.covers)
    refused: dict[int, DestinationError] = {}
    for error in errors:
        index = error.get("batch_index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            continue
        refused[index] = OperationRejected(_describe(error), request=request, response=response)
    if response.status == 207 and not refused:
        raise UnreadableAnswer(
            "Customer.io answered 207 (some operations refused) but named none of this "
            "request's operations",
            request=request,
            response=response,
        )
    return refused


def _errors(body: bytes) -> list[dict[str, Any]] | None:
    if not body.strip():
        return None
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    errors = decoded.get("errors") if isinstance(decoded, dict) else None
    if not isinstance(errors, list):
        return None
    return [error for error in errors if isinstance(error, dict)]


def _describe(error: Mapping[str, Any]) -> str:
    parts = [str(error[key]) for key in ("reason", "field", "message") if error.get(key)]
    detail = ": ".join(parts) if parts else "no reason given"
    return f"Customer.io refused this operation ({detail})"
