"""Braze's answers -> delivered / retryable / permanent, per object where it reports so.

From Braze's REST API reference: ``/users/track`` answers 201 ``{"message": "success", ...}``
when it took the request; with non-fatal errors the body adds ``"errors": [{"type": <why>,
"input_array": "attributes"|"events"|"purchases", "index": <position in that array>}]`` and
everything else in the request is still processed. 202 ``{"message": "queued"}`` during
maintenance is a success too. Fatal errors are 4xx (400 bad request or too many objects, 401
unknown or missing key, 403 plan does not allow it, 404 unknown key), 429 over the rate
limit and 5xx. Every answer carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (UTC epoch seconds at which the window resets).

So: a refused object dead-letters the event it came from, with Braze's reason (retrying
invalid data cannot succeed; an order's other products were processed), and the rest count
as delivered; 429 waits until ``Retry-After`` or else ``X-RateLimit-Reset``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from destinations.base import DestinationError, PartnerResponse, PermanentError, RetryableStatus
from destinations.braze.encoder import BrazeRequest
from destinations.http import raise_for_status

logger = logging.getLogger(__name__)

SUCCESS_MESSAGES = frozenset({"success", "queued"})
#: Longest wait taken from X-RateLimit-Reset; Braze's windows are seconds to an hour long.
MAX_RESET_WAIT = 3600.0


class ObjectRejected(PermanentError):
    """Braze refused an object made from this event (a non-fatal error in a 201)."""

    reason = "rejected_item"


class FatalAnswer(PermanentError):
    """A 2xx whose ``message`` is neither "success" nor "queued"."""

    reason = "rejected"


def reset_delay(response: PartnerResponse, *, now: float | None = None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (UTC epoch seconds); None when absent or unreadable."""
    raw = response.header("X-RateLimit-Reset")
    if raw is None:
        return None
    try:
        reset = float(raw.strip())
    except ValueError:
        return None
    if reset != reset:  # NaN
        return None
    current = time.time() if now is None else now
    return min(MAX_RESET_WAIT, max(0.0, reset - current))


def check(request: BrazeRequest, response: PartnerResponse) -> Mapping[int, DestinationError]:
    """Raise for a refused request; else the refused events (indexes into ``covers``)."""
    try:
        raise_for_status(request, response)
    except RetryableStatus as exc:
        if response.status == 429 and exc.retry_after is None:
            exc.retry_after = reset_delay(response)
        raise
    decoded = _decode(response.body)
    message = decoded.get("message")
    if isinstance(message, str) and message not in SUCCESS_MESSAGES:
        raise FatalAnswer(
            f"Braze answered HTTP {response.status} with message {message!r}",
            request=request,
            response=response,
        )
    errors = decoded.get("errors")
    if not isinstance(errors, list):
        return {}
    refused: dict[int, DestinationError] = {}
    unplaced = 0
    for error in errors:
        owner = _owner(request, error)
        if owner is None:
            unplaced += 1
            continue
        why = error.get("type") if isinstance(error, dict) else None
        refused.setdefault(
            owner,
            ObjectRejected(
                f"Braze refused the {error['input_array']} object made from this event "
                f"({why or 'no reason given'})",
                request=request,
                response=response,
            ),
        )
    if unplaced:
        # Braze processed everything its errors do not name; these name no object we sent.
        logger.warning(
            "Braze reported %d error(s) that name no object of the request; its other "
            "events count as delivered",
            unplaced,
        )
    return refused


def _decode(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _owner(request: BrazeRequest, error: Any) -> int | None:
    if not isinstance(error, dict):
        return None
    array, index = error.get("input_array"), error.get("index")
    if not isinstance(array, str) or not isinstance(index, int) or isinstance(index, bool):
        return None
    return request.owner(array, index)
