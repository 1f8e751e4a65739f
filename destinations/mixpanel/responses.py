"""Mixpanel's answers -> delivered, retry or dead letter, per event where Mixpanel says which.

- ``/import`` with ``strict=1``: 200 means every event was ingested. 400 with
  ``failed_records`` ingests every event that passed validation and names the others by
  their index in the request (``{"index", "insert_id", "field", "message"}``): only those
  fail, permanently (Mixpanel asks not to retry validation errors). A 400 without
  ``failed_records``, 401 (credentials) and 413 fail the whole request permanently; 429 and
  5xx retry it (with ``Retry-After`` when given).
- ``/engage`` and ``/groups`` with ``verbose=1`` answer 200 ``{"status": 1, "error": null}``
  or ``{"status": 0, "error": "..."}``: the latter refuses the whole request.
"""

from __future__ import annotations

from typing import Any

import orjson

from destinations.base import DestinationError, PartnerResponse, PermanentError
from destinations.http import raise_for_status
from destinations.segment import ItemizedRequest


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def check_response(
    request: ItemizedRequest, response: PartnerResponse
) -> dict[int, DestinationError]:
    if request.endpoint == "import" and response.status == 400:
        refused = _failed_records(request, response)
        if refused:
            return refused
    raise_for_status(request, response)
    if request.endpoint in ("engage", "groups"):
        parsed = _json(response.body)
        status = parsed.get("status") if isinstance(parsed, dict) else parsed
        if status == 0 or status == "0":
            error = parsed.get("error") if isinstance(parsed, dict) else None
            raise PermanentError(
                f"Mixpanel refused the {request.endpoint} update: {error or 'status 0'}",
                reason="rejected",
                request=request,
                response=response,
            )
    return {}


def _failed_records(
    request: ItemizedRequest, response: PartnerResponse
) -> dict[int, DestinationError]:
    parsed = _json(response.body)
    records = parsed.get("failed_records") if isinstance(parsed, dict) else None
    if not isinstance(records, list):
        return {}
    refused: dict[int, DestinationError] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        index = record.get("index")
        if not isinstance(index, int) or not 0 <= index < len(request.owners):
            continue
        field = record.get("field") or "event"
        message = record.get("message") or "failed validation"
        refused[request.owners[index]] = PermanentError(
            f"Mixpanel refused {field}: {message}",
            reason="invalid_event",
            request=request,
            response=response,
        )
    return refused
