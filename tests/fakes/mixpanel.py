"""A fake Mixpanel Ingestion API, from Mixpanel's reference (ingestion.openapi.yaml).

``POST /import?strict=1[&project_id=N]``: Basic auth, either a service account
(``username:secret`` plus ``project_id``) or the project secret or token as the username
with an empty password. JSON array of at most 2,000 events and 2 MB. Each event needs
``event`` and ``properties.time`` (seconds or ms since epoch, after 1971-01-01 and at most an
hour ahead), ``properties.distinct_id`` (a string, not a placeholder such as "anon") and
``properties.$insert_id`` (at most 36 letters, digits or "-"). Answers 200
``{"code": 200, "num_records_imported": N, "status": "OK"}``; 400 with ``failed_records``
(``index``, ``insert_id``, ``field``, ``message``) after ingesting the valid ones; 401
``Invalid credentials``; 413; 429 ``Project exceeded rate limits``.

``POST /engage?verbose=1`` / ``/groups?verbose=1``: JSON array of updates with ``$token``
and ``$distinct_id`` (or ``$group_key`` + ``$group_id``) and one operation; answers 200
``{"status": 1, "error": null}`` or ``{"status": 0, "error": "..."}``.

GDPR API v3 (gdpr.openapi.yaml), ``POST /api/app/data-deletions/v3.0/?token=<project token>``:
``Authorization: Bearer <OAuth token for GDPR APIs>`` (else 401 ``{"status": "error",
"error"}``); a JSON body with ``distinct_ids`` (1 to 1,999 strings) and ``compliance_type``
(``GDPR`` or ``CCPA``, default GDPR); answers 200 ``{"status": "ok", "results":
[{"status": "PENDING", "tracking_id", "distinct_id_count", "compliance_type", ...}]}``, else
400 ``{"status": "error", "error"}``.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import Call, FakePartner

MAX_EVENTS = 2000
MAX_BYTES = 2 * 1024 * 1024
PLACEHOLDER_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "<nil>",
        "0",
        "-1",
        "true",
        "false",
        "[]",
        "{}",
    }
)
INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
OPERATIONS = ("$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete")


@dataclass
class FakeMixpanel(FakePartner):
    token: str = "mp-token-000000"
    api_secret: str | None = None
    service_account: tuple[str, str, str] | None = None  # (username, secret, project_id)
    #: Events whose $insert_id is here fail validation (as if a property were malformed).
    refuse_insert_ids: set[str] = field(default_factory=set)
    #: Answer this many /import requests with 429 before accepting again.
    throttle: int = 0
    imported: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    gdpr_token: str = "mp-gdpr-oauth-000000"
    #: Statuses to answer the next deletion requests with (then 200 again).
    deletion_failures: list[int] = field(default_factory=list)
    #: distinct ids of the deletion tasks created.
    deleted_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/app/data-deletions/v3.0/", self._deletions)
        app.router.add_post("/import", self._import)
        app.router.add_post("/engage", self._engage)
        app.router.add_post("/groups", self._groups)

    async def _deletions(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        if call.headers.get("Authorization") != f"Bearer {self.gdpr_token}":
            self.problems.append("deletion without the GDPR OAuth bearer token")
            return self.answer(call, 401, {"status": "error", "error": "Invalid OAuth token"})
        if call.query.get("token") != self.token:
            self.problems.append("deletion without the project token in ?token=")
            return self.answer(call, 400, {"status": "error", "error": "token is required"})
        if self.deletion_failures:
            status = self.deletion_failures.pop(0)
            return self.answer(call, status, {"status": "error", "error": "try again later"})
        body = orjson.loads(call.body)
        ids = body.get("distinct_ids") if isinstance(body, dict) else None
        compliance = body.get("compliance_type", "GDPR") if isinstance(body, dict) else None
        problems = []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append("distinct_ids must be a list of strings")
        elif not 1 <= len(ids) <= 1999:
            problems.append("1 to 1999 distinct_ids")
        if compliance not in ("GDPR", "CCPA"):
            problems.append("compliance_type must be GDPR or CCPA")
        if problems:
            self.problems.extend(problems)
            return self.answer(call, 400, {"status": "error", "error": "; ".join(problems)})
        assert isinstance(ids, list)
        self.deleted_ids.extend(ids)
        task = {
            "status": "PENDING",
            "disclosure_type": "DATA",
            "date_requested": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "tracking_id": str(1583792934719392965 + len(self.deleted_ids)),
            "project_id": 1978118,
            "compliance_type": str(compliance).lower(),
            "destination_url": None,
            "requesting_user": "privacy@example.com",
            "distinct_id_count": len(ids),
        }
        return self.answer(call, 200, {"status": "ok", "results": [task]})

    def _authorized(self, call: Call) -> bool:
        header = call.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if self.service_account is not None and "project_id" in call.query:
            name, secret, project = self.service_account
            return (user, password, call.query["project_id"]) == (name, secret, project)
        return password == "" and user in {self.token, self.api_secret}

    async def _import(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        if call.query.get("strict") != "1":
            return self.answer(call, 400, {"code": 400, "error": "strict=1 expected by this fake"})
        if not self._authorized(call):
            return self.answer(
                call, 401, {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
            )
        if self.throttle > 0:
            self.throttle -= 1
            return self.answer(
                call,
                429,
                {
                    "code": 429,
                    "error": "Project exceeded rate limits. Please retry the request with "
                    "exponential backoff.",
                    "status": "Too Many Requests",
                },
            )
        if len(call.body) > MAX_BYTES:
            return self.answer(
                call,
                413,
                {"code": 413, "error": f"request exceeds max limit of {MAX_BYTES} bytes"},
            )
        events = orjson.loads(call.body)
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
            return self.answer(call, 400, {"code": 400, "error": "expected 1-2000 events"})
        failed = []
        imported = 0
        for index, event in enumerate(events):
            problem = self._problem(event)
            insert_id = (event.get("properties") or {}).get("$insert_id")
            if problem is None and insert_id in self.refuse_insert_ids:
                problem = ("properties.utm_source", "string should be valid utf8")
            if problem is not None:
                failed.append(
                    {
                        "index": index,
                        "insert_id": insert_id,
                        "field": problem[0],
                        "message": problem[1],
                    }
                )
                continue
            self.imported[insert_id] = event
            imported += 1
        if failed:
            return self.answer(
                call,
                400,
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "failed_records": failed,
                    "num_records_imported": imported,
                    "status": "Bad Request",
                },
            )
        return self.answer(
            call, 200, {"code": 200, "num_records_imported": imported, "status": "OK"}
        )

    @staticmethod
    def _problem(event: Any) -> tuple[str, str] | None:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            return "event", "'event' is required"
        properties = event.get("properties")
        if not isinstance(properties, dict):
            return "properties", "'properties' is required"
        stamp = properties.get("time")
        if not isinstance(stamp, int):
            return "properties.time", "'properties.time' is invalid: must be an integer"
        seconds = stamp / 1000 if stamp > 10**11 else stamp
        if seconds < 31536000 or seconds > time.time() + 3600:
            return "properties.time", "'properties.time' is out of the accepted range"
        if event["event"] == "$merge":
            ids = properties.get("$distinct_ids")
            if not (isinstance(ids, list) and len(ids) == 2):
                return "properties.$distinct_ids", "$merge needs exactly two $distinct_ids"
        distinct = properties.get("distinct_id")
        if not isinstance(distinct, str) or distinct.lower() in PLACEHOLDER_IDS:
            return "properties.distinct_id", "'properties.distinct_id' is invalid"
        insert_id = properties.get("$insert_id")
        if not isinstance(insert_id, str) or not INSERT_ID.match(insert_id):
            return "properties.$insert_id", "'properties.$insert_id' is invalid"
        return None

    async def _engage(self, request: web.Request) -> web.Response:
        return await self._updates(request, ("$distinct_id",), self.profiles)

    async def _groups(self, request: web.Request) -> web.Response:
        return await self._updates(request, ("$group_key", "$group_id"), self.groups)

    async def _updates(
        self, request: web.Request, keys: tuple[str, ...], store: list[dict[str, Any]]
    ) -> web.Response:
        call = await self.record(request)
        updates = orjson.loads(call.body)
        if not isinstance(updates, list) or not 1 <= len(updates) <= MAX_EVENTS:
            return self.answer(call, 200, {"status": 0, "error": "expected 1-2000 updates"})
        for update in updates:
            if update.get("$token") != self.token:
                return self.answer(call, 200, {"status": 0, "error": "Invalid token"})
            if any(not isinstance(update.get(k), str) for k in keys):
                return self.answer(call, 200, {"status": 0, "error": f"missing {keys}"})
            if sum(op in update for op in OPERATIONS) != 1:
                return self.answer(call, 200, {"status": 0, "error": "one operation expected"})
        store.extend(updates)
        return self.answer(call, 200, {"status": 1, "error": None})
