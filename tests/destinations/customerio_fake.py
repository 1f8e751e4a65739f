"""A local Customer.io Track API, written from Customer.io's Track API reference.

What it checks, as the reference states it:
- Basic auth ``site_id:api_key`` on every call (else 401, empty body);
- ``POST /api/v2/batch``: JSON ``{"batch": [...]}``, the request under 500 KB and each
  operation at most 32 KB; each operation is a person (``identifiers``: exactly one of
  ``id``/``email``/``phone``/``cio_id``; ``action`` identify/event/page/screen/delete/...;
  ``name`` required for event/page/screen; ``id`` a ULID; ``timestamp`` an integer) or an
  object (``identifiers`` ``object_type_id`` + ``object_id``; ``cio_relationships`` a list
  of people). Invalid operations are answered 207 ``{"errors": [{"batch_index", "reason",
  "field", "message"}]}`` and every other operation is accepted; a malformed request is 400;
- the documented identify limits (attribute names at most 150 bytes, at most 300 attributes);
- ``POST /api/v1/events``: one anonymous event (``name`` required, ``type`` event/page/screen)
  answered 200 ``{}`` or 400 ``{"meta": {"error": ...}}``;
- ``GET /api/v1/accounts/region``: the account's region for valid credentials.

``throttle(n)`` answers the next n data (POST) calls 429 (the fair-use limit); every violation
of the reference that a 4xx would not show is kept in ``problems`` so a test can assert there
are none.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

MAX_REQUEST_BYTES = 500 * 1000
MAX_OPERATION_BYTES = 32 * 1000
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_PERSON_IDS = ("id", "email", "phone", "cio_id")
_PERSON_ACTIONS = {
    "identify",
    "delete",
    "event",
    "screen",
    "page",
    "add_relationships",
    "delete_relationships",
    "add_device",
    "delete_device",
    "merge",
    "suppress",
    "unsuppress",
}
_OBJECT_ACTIONS = {
    "identify",
    "identify_anonymous",
    "delete",
    "add_relationships",
    "delete_relationships",
}


@dataclass
class FakeCustomerIO:
    site_id: str
    api_key: str
    region: str = "us"
    #: Accepted operations from /api/v2/batch, in arrival order.
    operations: list[dict[str, Any]] = field(default_factory=list)
    #: Accepted anonymous events from /api/v1/events.
    anonymous_events: list[dict[str, Any]] = field(default_factory=list)
    #: (path, body bytes, headers) of every call, whatever the answer.
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    throttled: int = 0
    retry_after: str | None = None
    port: int = 0
    _runner: web.AppRunner | None = None
    _seen_ids: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def throttle(self, calls: int, retry_after: str | None = None) -> None:
        self.throttled = calls
        self.retry_after = retry_after

    async def __aenter__(self) -> FakeCustomerIO:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/api/v2/batch", self._batch)
        app.router.add_post("/api/v1/events", self._anonymous)
        app.router.add_get("/api/v1/accounts/region", self._region)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ common

    async def _gate(self, request: web.Request) -> tuple[bytes, web.Response | None]:
        body = await request.read()
        self.calls.append((request.path, body, dict(request.headers)))
        expected = base64.b64encode(f"{self.site_id}:{self.api_key}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return body, web.Response(status=401)
        if self.throttled > 0 and request.method == "POST":  # data calls, not the region check
            self.throttled -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return body, web.json_response(
                {"meta": {"error": "rate limit exceeded"}}, status=429, headers=headers
            )
        if request.method == "POST" and request.content_type != "application/json":
            self.problems.append(f"{request.path}: Content-Type {request.content_type}")
            return body, web.json_response({"meta": {"error": "invalid content type"}}, status=400)
        return body, None

    # ------------------------------------------------------------ endpoints

    async def _region(self, request: web.Request) -> web.Response:
        _body, refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        host = (
            "https://track-eu.customer.io" if self.region == "eu" else "https://track.customer.io"
        )
        return web.json_response({"url": host, "region": self.region, "environment_id": 3})

    async def _batch(self, request: web.Request) -> web.Response:
        body, refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        if len(body) >= MAX_REQUEST_BYTES:
            self.problems.append(f"batch of {len(body)} bytes (limit 500 KB)")
            return _malformed("the request must be smaller than 500kb")
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _malformed("invalid JSON")
        batch = decoded.get("batch") if isinstance(decoded, dict) else None
        if not isinstance(batch, list) or not batch:
            return _malformed("batch must be a non-empty array")
        errors: list[dict[str, Any]] = []
        for index, operation in enumerate(batch):
            problem = _operation_problem(operation)
            if problem is None and len(orjson.dumps(operation)) > MAX_OPERATION_BYTES:
                self.problems.append(f"operation {index} over 32 KB")
                problem = ("", "too_large", "each request in a batch must be 32kb or smaller")
            if problem is None:
                event_id = operation.get("id")
                if isinstance(event_id, str) and event_id in self._seen_ids:
                    continue  # Customer.io deduplicates events by id
                if isinstance(event_id, str):
                    self._seen_ids.add(event_id)
                self.operations.append(operation)
                continue
            field_name, reason, message = problem
            errors.append(
                {"batch_index": index, "reason": reason, "field": field_name, "message": message}
            )
        if errors:
            return web.json_response({"errors": errors}, status=207)
        return web.json_response({})

    async def _anonymous(self, request: web.Request) -> web.Response:
        body, refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _v1_error("invalid JSON")
        if not isinstance(event, dict):
            return _v1_error("body must be an object")
        if not isinstance(event.get("name"), str) or not event["name"].strip():
            return _v1_error("name cannot be blank")
        if event.get("type", "event") not in ("event", "page", "screen"):
            return _v1_error("type must be event, page or screen")
        if "timestamp" in event and not isinstance(event["timestamp"], int):
            return _v1_error("timestamp must be a unix timestamp")
        if "data" in event and not isinstance(event["data"], dict):
            return _v1_error("data must be an object")
        if "id" in event and not _ULID.match(str(event["id"])):
            return _v1_error("id must be a valid ULID")
        if not event.get("anonymous_id"):
            self.problems.append("anonymous event without anonymous_id cannot be merged later")
        self.anonymous_events.append(event)
        return web.json_response({})


def _malformed(message: str) -> web.Response:
    return web.json_response(
        {"errors": [{"reason": "malformed", "field": "", "message": message}]}, status=400
    )


def _v1_error(message: str) -> web.Response:
    return web.json_response({"meta": {"error": message}}, status=400)


def _operation_problem(operation: Any) -> tuple[str, str, str] | None:
    """(field, reason, message) for an invalid operation, None for a valid one."""
    if not isinstance(operation, dict):
        return "", "invalid", "each batch entry must be an object"
    kind = operation.get("type")
    identifiers = operation.get("identifiers")
    action = operation.get("action")
    if kind == "person":
        if action not in _PERSON_ACTIONS:
            return "action", "invalid", f"unknown person action {action!r}"
        if action == "merge":
            return None
        if not isinstance(identifiers, dict) or len(identifiers) != 1:
            return "identifiers", "required", "exactly one of id, email, phone or cio_id"
        [(name, value)] = identifiers.items()
        if name not in _PERSON_IDS or not isinstance(value, str) or not value:
            return f"identifiers.{name}", "invalid", "must be a non-empty string"
        if action in ("event", "page", "screen"):
            if not isinstance(operation.get("name"), str) or not operation["name"].strip():
                return "name", "required", "name cannot be blank"
            if "id" in operation and not _ULID.match(str(operation["id"])):
                return "id", "invalid", "id must be a valid ULID"
        if action == "identify":
            attributes = operation.get("attributes", {})
            if not isinstance(attributes, dict):
                return "attributes", "invalid", "attributes must be an object"
            if len(attributes) > 300:
                return "attributes", "too_many", "cannot identify more than 300 attributes"
            for key in attributes:
                if len(key.encode()) > 150:
                    return (
                        f"attributes.{key[:20]}",
                        "too_long",
                        "attribute name cannot be longer than 150 bytes",
                    )
    elif kind == "object":
        if action not in _OBJECT_ACTIONS:
            return "action", "invalid", f"unknown object action {action!r}"
        if not isinstance(identifiers, dict) or not (
            {"object_type_id", "object_id"} <= identifiers.keys() or "cio_object_id" in identifiers
        ):
            return "identifiers", "required", "object_type_id and object_id are required"
        if not re.fullmatch(r"[1-9][0-9]*", str(identifiers.get("object_type_id", "1"))):
            return "identifiers.object_type_id", "invalid", "must be a string integer"
        relationships = operation.get("cio_relationships", [])
        if not isinstance(relationships, list) or not all(
            isinstance(r, dict) and isinstance(r.get("identifiers"), dict) for r in relationships
        ):
            return "cio_relationships", "invalid", "each relationship needs identifiers"
    else:
        return "type", "invalid", "type must be person, object or delivery"
    if "timestamp" in operation and not isinstance(operation["timestamp"], int):
        return "timestamp", "invalid", "timestamp must be a unix timestamp"
    return None
