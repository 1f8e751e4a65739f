"""Amplitude's HTTP V2 answers -> delivered, retry or dead letter, per event where it says which.

Amplitude ingests nothing from a request it answers 400 or 429 (its SDKs resend the events
it did not name); ``insert_id`` makes resending safe. So:

- 200: every event delivered.
- 400 naming events by index (``events_with_invalid_fields``, ``events_with_missing_fields``,
  ``events_with_invalid_id_lengths``: ``{field: [index, ...]}``; ``silenced_events``:
  ``[index, ...]``): those fail permanently; every other event of the request is retried
  about a second later (reason ``resend``). A 400 naming nobody (a bad API key, a bad body)
  fails the whole request.
- 429 naming users or devices (``throttled_users``, ``throttled_devices``,
  ``throttled_events``; ``exceeded_daily_quota_users``/``_devices``): events over the daily
  quota are dead-lettered (``daily_quota``: Amplitude keeps refusing them until the next
  day; redrive them then); throttled users' and devices' events retry on the destination's
  backoff schedule (``delivery.backoff_min`` and up; Amplitude asks for about 30 s); the
  others are resent about a second later. None of these carries a Retry-After, because the
  lane pauses every request for a refused event's Retry-After: one hot user must not hold
  back anyone else. A 429 naming nobody retries the whole request, the lane paused for
  ``Retry-After``.
- 413, 401, 403 and other 4xx: permanent; 5xx: retried (the shared HTTP rules).
"""

from __future__ import annotations

from typing import Any

import orjson

from destinations.base import (
    DestinationError,
    PartnerResponse,
    PermanentError,
    RetryableError,
)
from destinations.http import raise_for_status
from destinations.segment import ItemizedRequest

_INDEXED_FIELDS = (
    "events_with_invalid_fields",
    "events_with_missing_fields",
    "events_with_invalid_id_lengths",
)


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value}
    if isinstance(value, list):
        return {str(v) for v in value}
    return set()


def _indexes(value: Any) -> set[int]:
    return {i for i in value if isinstance(i, int)} if isinstance(value, list) else set()


def check_response(
    request: ItemizedRequest, response: PartnerResponse
) -> dict[int, DestinationError]:
    if response.status == 400:
        refused = _invalid_events(request, response)
        if refused:
            return refused
    elif response.status == 429:
        refused = _throttled_events(request, response)
        if refused:
            return refused
    raise_for_status(request, response)
    return {}


def _resend(request: ItemizedRequest, response: PartnerResponse, why: str) -> RetryableError:
    return RetryableError(
        f"Amplitude ingested nothing from this request ({why}); sent again",
        reason="resend",
        request=request,
        response=response,
        retry_after=0.0,
    )


def _invalid_events(
    request: ItemizedRequest, response: PartnerResponse
) -> dict[int, DestinationError]:
    body = _json(response.body)
    problems: dict[int, list[str]] = {}
    for field in _INDEXED_FIELDS:
        by_name = body.get(field)
        if not isinstance(by_name, dict):
            continue
        for name, indexes in by_name.items():
            for index in _indexes(indexes):
                label = field.removeprefix("events_with_").replace("_", " ")
                problems.setdefault(index, []).append(f"{label}: {name}")
    silenced = _indexes(body.get("silenced_events"))
    owners = request.owners
    refused: dict[int, DestinationError] = {}
    for index in sorted(set(problems) | silenced):
        if not 0 <= index < len(owners):
            continue
        if index in problems:
            refused[owners[index]] = PermanentError(
                "Amplitude refused the event (" + "; ".join(problems[index]) + ")",
                reason="invalid_event",
                request=request,
                response=response,
            )
        else:
            refused[owners[index]] = PermanentError(
                "Amplitude silenced this device (blocked in the project's settings)",
                reason="silenced",
                request=request,
                response=response,
            )
    if not refused:
        return {}
    resend = _resend(request, response, f"{len(refused)} event(s) refused")
    for slot in range(len(request.covers)):
        refused.setdefault(slot, resend)
    return refused


def _throttled_events(
    request: ItemizedRequest, response: PartnerResponse
) -> dict[int, DestinationError]:
    body = _json(response.body)
    throttled_users = _keys(body.get("throttled_users"))
    throttled_devices = _keys(body.get("throttled_devices"))
    quota_users = _keys(body.get("exceeded_daily_quota_users"))
    quota_devices = _keys(body.get("exceeded_daily_quota_devices"))
    throttled_indexes = _indexes(body.get("throttled_events"))
    if not (
        throttled_users or throttled_devices or quota_users or quota_devices or throttled_indexes
    ):
        return {}
    items = _json(request.body).get("events")
    items = items if isinstance(items, list) else []
    quota = PermanentError(
        "Amplitude's daily event quota for this user or device is used up",
        reason="daily_quota",
        request=request,
        response=response,
    )
    throttled = RetryableError(
        "Amplitude throttled this user or device",
        reason="throttled",
        request=request,
        response=response,
    )
    resend = _resend(request, response, "other users were throttled")
    # Severity per event: quota (dead letter) > throttled (wait) > resend (soon).
    rank = {id(quota): 2, id(throttled): 1, id(resend): 0}
    refused: dict[int, DestinationError] = {}
    for index, owner in enumerate(request.owners):
        item = items[index] if index < len(items) and isinstance(items[index], dict) else {}
        user, device = str(item.get("user_id", "")), str(item.get("device_id", ""))
        if (user and user in quota_users) or (device and device in quota_devices):
            verdict: DestinationError = quota
        elif (
            index in throttled_indexes
            or (user and user in throttled_users)
            or (device and device in throttled_devices)
        ):
            verdict = throttled
        else:
            verdict = resend
        known = refused.get(owner)
        if known is None or rank[id(verdict)] > rank[id(known)]:
            refused[owner] = verdict
    return refused
