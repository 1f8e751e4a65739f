"""A fake Amplitude HTTP V2 API (``POST /2/httpapi``), from Amplitude's reference.

Body ``{"api_key", "events": [...], "options": {"min_id_length"}}`` as
``application/json``; at most 2,000 events and 1 MB, else 413. Each event needs
``event_type`` and ``user_id`` or ``device_id`` (ids at least ``min_id_length``, default 5,
characters); ``time`` is ms since epoch. Answers:

- 200 ``{"code": 200, "events_ingested", "payload_size_bytes", "server_upload_time"}``;
- 400 ``{"code": 400, "error", "missing_field", "events_with_invalid_fields",
  "events_with_missing_fields", "events_with_invalid_id_lengths", "silenced_events"}``
  (``{field: [index]}``); a bad API key is a 400 naming no event;
- 429 ``{"code": 429, "error", "eps_threshold", "throttled_devices", "throttled_users",
  "exceeded_daily_quota_users", "exceeded_daily_quota_devices", "throttled_events"}``.

A 400 or 429 ingests nothing. ``insert_id`` deduplicates (a repeat is accepted, not counted).

User Privacy API (v1), ``POST /api/2/deletions/users``: Basic auth ``api_key:secret_key``
(else 401); a JSON body with ``user_ids`` and/or ``amplitude_ids`` (at most 100 each, at
least one id), optional ``requester`` (a string), ``ignore_invalid_id`` and
``delete_from_org`` (booleans written as the strings ``"True"``/``"False"``); answers 200 with
the deletion jobs scheduled (``[{"amplitude_ids": [{"amplitude_id", "requested_on_day",
"requester"}], "app", "day", "status": "staging"}]``), else 400 naming the problem.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakePartner

MAX_EVENTS = 2000
MAX_BYTES = 1_000_000


@dataclass
class FakeAmplitude(FakePartner):
    api_key: str = "amp-key-000000"
    #: user_id -> times to throttle a request holding that user's events.
    throttle_users: dict[str, int] = field(default_factory=dict)
    #: users whose daily quota is used up (every request with them is a 429).
    quota_users: set[str] = field(default_factory=set)
    #: event_type values treated as invalid (``events_with_invalid_fields``).
    invalid_event_types: set[str] = field(default_factory=set)
    ingested: dict[str, dict[str, Any]] = field(default_factory=dict)
    secret_key: str = "amp-secret-000000"
    #: Statuses to answer the next deletion requests with (then 200 again).
    deletion_failures: list[int] = field(default_factory=list)
    #: user ids of the deletion jobs scheduled.
    deleted_users: list[str] = field(default_factory=list)
    #: Every way a deletion request broke the reference (a test asserts there are none).
    problems: list[str] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2/httpapi", self._httpapi)
        app.router.add_post("/api/2/deletions/users", self._deletions)

    async def _deletions(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        header = call.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.api_key}:{self.secret_key}".encode()).decode()
        if header != f"Basic {expected}":
            self.problems.append("deletion without the api_key:secret_key Basic auth")
            return self.answer(call, 401, "Invalid API key or secret key")
        if self.deletion_failures:
            return self.answer(call, self.deletion_failures.pop(0), {"error": "unavailable"})
        if not call.headers.get("Content-Type", "").startswith("application/json"):
            self.problems.append("deletion body is not application/json")
            return self.answer(call, 400, {"error": "Invalid Content-Type"})
        body = orjson.loads(call.body)
        user_ids = body.get("user_ids", [])
        amplitude_ids = body.get("amplitude_ids", [])
        problems = []
        if not isinstance(user_ids, list) or not all(isinstance(u, str) for u in user_ids):
            problems.append("user_ids must be a list of strings")
        if not isinstance(amplitude_ids, list) or not all(
            isinstance(a, int) for a in amplitude_ids
        ):
            problems.append("amplitude_ids must be a list of integers")
        if not problems and not user_ids and not amplitude_ids:
            problems.append("no user_ids or amplitude_ids")
        if not problems and (len(user_ids) > 100 or len(amplitude_ids) > 100):
            problems.append("at most 100 ids of each kind")
        for option in ("ignore_invalid_id", "delete_from_org"):
            if option in body and body[option] not in ("True", "False"):
                problems.append(f"{option} must be the string True or False")
        if "requester" in body and not isinstance(body["requester"], str):
            problems.append("requester must be a string")
        unknown = set(body) - {
            "user_ids",
            "amplitude_ids",
            "requester",
            "ignore_invalid_id",
            "delete_from_org",
            "include_mapped_user_ids",
        }
        if unknown:
            problems.append(f"unknown fields {sorted(unknown)}")
        if problems:
            self.problems.extend(problems)
            return self.answer(call, 400, {"error": "; ".join(problems)})
        self.deleted_users.extend(user_ids)
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400))
        jobs = [
            {
                "amplitude_ids": [
                    {
                        "amplitude_id": 1000 + i,
                        "requested_on_day": time.strftime("%Y-%m-%d", time.gmtime()),
                        "requester": body.get("requester", ""),
                    }
                    for i, _ in enumerate(user_ids)
                ],
                "app": "123456",
                "day": day,
                "status": "staging",
            }
        ]
        return self.answer(call, 200, jobs)

    async def _httpapi(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        if not call.headers.get("Content-Type", "").startswith("application/json"):
            return self.answer(call, 400, {"code": 400, "error": "Invalid Content-Type"})
        if len(call.body) > MAX_BYTES:
            return self.answer(call, 413, {"code": 413, "error": "Payload too large"})
        body = orjson.loads(call.body)
        if body.get("api_key") != self.api_key:
            return self.answer(
                call, 400, {"code": 400, "error": "Invalid API key", "missing_field": None}
            )
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return self.answer(call, 400, {"code": 400, "missing_field": "events"})
        if len(events) > MAX_EVENTS:
            return self.answer(call, 413, {"code": 413, "error": "Too many events"})
        min_length = (body.get("options") or {}).get("min_id_length", 5)
        missing: dict[str, list[int]] = {}
        invalid: dict[str, list[int]] = {}
        short: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            if not isinstance(event.get("event_type"), str):
                missing.setdefault("event_type", []).append(index)
            elif event["event_type"] in self.invalid_event_types:
                invalid.setdefault("event_type", []).append(index)
            if "user_id" not in event and "device_id" not in event:
                missing.setdefault("user_id", []).append(index)
            for key in ("user_id", "device_id"):
                if key in event and len(str(event[key])) < min_length:
                    short.setdefault(key, []).append(index)
            if "time" in event and not isinstance(event["time"], int):
                invalid.setdefault("time", []).append(index)
        if missing or invalid or short:
            return self.answer(
                call,
                400,
                {
                    "code": 400,
                    "error": "Request missing required field",
                    "missing_field": next(iter(missing), None),
                    "events_with_invalid_fields": invalid,
                    "events_with_missing_fields": missing,
                    "events_with_invalid_id_lengths": short,
                    "silenced_events": [],
                },
            )
        users = {str(e.get("user_id")) for e in events if "user_id" in e}
        throttled = {u for u in users if self.throttle_users.get(u, 0) > 0}
        quota = users & self.quota_users
        if throttled or quota:
            for user in throttled:
                self.throttle_users[user] -= 1
            return self.answer(
                call,
                429,
                {
                    "code": 429,
                    "error": "Too many requests for some devices and users",
                    "eps_threshold": 30,
                    "throttled_devices": {},
                    "throttled_users": dict.fromkeys(throttled, 31),
                    "exceeded_daily_quota_users": dict.fromkeys(quota, 500001),
                    "exceeded_daily_quota_devices": {},
                    "throttled_events": [
                        i for i, e in enumerate(events) if str(e.get("user_id")) in throttled
                    ],
                },
            )
        for event in events:
            self.ingested.setdefault(str(event.get("insert_id")), event)
        return self.answer(
            call,
            200,
            {
                "code": 200,
                "events_ingested": len(events),
                "payload_size_bytes": len(call.body),
                "server_upload_time": int(time.time() * 1000),
            },
        )
