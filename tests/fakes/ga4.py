"""A fake GA4 Measurement Protocol, from Google's reference.

``POST /mp/collect?measurement_id=G-...&api_secret=...`` with a JSON body below 130 kB:
``client_id`` (required), ``user_id``, ``timestamp_micros``, ``user_properties``
(``{name: {"value": v}}``, at most 25, names at most 24 characters, values 36) and at most
25 ``events`` (``name``: letters, digits, ``_``, starting with a letter, at most 40, not
reserved; ``params``: at most 25, names like event names, string values at most 100
characters; ``items`` at most 200). ``/mp/collect`` always answers 204, whatever it
thinks of the payload (GA4 then drops what is invalid: the fake keeps both lists so tests
can tell); ``/debug/mp/collect`` answers 200 ``{"validationMessages": [{"fieldPath",
"description", "validationCode"}]}`` and records nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakePartner

NAME = re.compile(r"^[^\W\d_]\w{0,39}$")  # letters of any language, digits, _
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_EVENTS = frozenset(
    {"ad_click", "app_remove", "error", "first_open", "first_visit", "in_app_purchase"}
    | {"os_update", "screen_view", "session_start", "user_engagement", "ad_impression"}
)


@dataclass
class FakeGA4(FakePartner):
    measurement_id: str = "G-TEST12345"
    api_secret: str = "ga4-secret-000000"
    #: (request body, event) pairs GA4 would process, and messages for those it would drop.
    collected: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/mp/collect", self._collect)
        app.router.add_post("/debug/mp/collect", self._debug)

    def validate(self, query: dict[str, str], raw: bytes) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []

        def problem(path: str, description: str, code: str) -> None:
            messages.append({"fieldPath": path, "description": description, "validationCode": code})

        if query.get("measurement_id") != self.measurement_id:
            problem("measurement_id", "Unknown measurement_id", "VALUE_INVALID")
        if len(raw) >= 130_000:
            problem("", "Payload is larger than 130kB", "VALUE_OUT_OF_BOUNDS")
        body = orjson.loads(raw)
        if not isinstance(body.get("client_id"), str) or not body["client_id"]:
            problem("client_id", "client_id is required", "VALUE_REQUIRED")
        properties = body.get("user_properties") or {}
        if len(properties) > 25:
            problem("user_properties", "Too many user properties", "EXCEEDED_MAX_ENTITIES")
        for name, holder in properties.items():
            if len(name) > 24 or not NAME.match(name) or name.startswith(RESERVED_PREFIXES):
                problem(
                    "user_properties", f"User property [{name}] has an invalid name", "NAME_INVALID"
                )
            value = holder.get("value") if isinstance(holder, dict) else None
            if isinstance(value, str) and len(value) > 36:
                problem(
                    "user_properties",
                    f"User property [{name}] value too long",
                    "VALUE_OUT_OF_BOUNDS",
                )
        events = body.get("events")
        if not isinstance(events, list) or not 1 <= len(events) <= 25:
            problem("events", "Between 1 and 25 events are required", "EXCEEDED_MAX_ENTITIES")
            return messages
        for index, event in enumerate(events):
            name = event.get("name", "")
            if not NAME.match(name) or name.startswith(RESERVED_PREFIXES):
                problem(
                    "events",
                    f"Event at index: [{index}] has invalid name [{name}].",
                    "NAME_INVALID",
                )
            elif name in RESERVED_EVENTS:
                problem(
                    "events",
                    f"Event at index: [{index}] has reserved name [{name}].",
                    "NAME_RESERVED",
                )
            params = event.get("params") or {}
            if len(params) > 25:
                problem(
                    "events.params",
                    f"Event at index: [{index}] has too many params",
                    "EXCEEDED_MAX_ENTITIES",
                )
            for key, value in params.items():
                if key == "items":
                    if not isinstance(value, list) or len(value) > 200:
                        problem(
                            "events.params.items",
                            f"Event at index: [{index}] has invalid items",
                            "VALUE_INVALID",
                        )
                    continue
                if not NAME.match(key) or key.startswith(RESERVED_PREFIXES):
                    problem(
                        "events.params",
                        f"Event at index: [{index}] has invalid param [{key}]",
                        "NAME_INVALID",
                    )
                if isinstance(value, str) and len(value) > 100:
                    problem(
                        "events.params",
                        f"Event at index: [{index}] param [{key}] too long",
                        "VALUE_OUT_OF_BOUNDS",
                    )
                if isinstance(value, dict | list):
                    problem(
                        "events.params",
                        f"Event at index: [{index}] param [{key}] is not a scalar",
                        "VALUE_INVALID",
                    )
        return messages

    async def _collect(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        messages = self.validate(call.query, call.body)
        if call.query.get("api_secret") != self.api_secret:
            messages.append({"description": "wrong api_secret (GA4 would drop silently)"})
        if messages:
            self.dropped.extend(m["description"] for m in messages)
        else:
            body = orjson.loads(call.body)
            self.collected.extend((body, event) for event in body["events"])
        call.status = 204
        return web.Response(status=204)

    async def _debug(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        return self.answer(call, 200, {"validationMessages": self.validate(call.query, call.body)})
