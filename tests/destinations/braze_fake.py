"""A local Braze REST API (``/users/track``, ``/users/delete``) written from Braze's reference.

What it checks, as the reference states it:
- ``Authorization: Bearer <REST API key>`` (else 401 ``{"message": ...}``), JSON bodies;
- ``/users/track``: ``attributes``, ``events``, ``purchases`` arrays, at most ``limit`` objects
  (75; counted over all three arrays, which is valid under every plan's rule) else 400
  "Max Input Length Exceeded"; every object names a user (``external_id``, ``user_alias``
  with ``alias_name`` and ``alias_label``, ``braze_id``, ``email`` or ``phone``); events need
  ``name`` and an ISO 8601 ``time``; purchases ``product_id`` (at most 255 characters),
  a 3-letter ``currency``, a numeric ``price``, ``quantity`` at most 100 and ``time``;
  property names non-empty, at most 255 characters, no leading ``$``; ``gender`` one of
  M/F/O/N/P; ``dob`` ``YYYY-MM-DD``. Invalid objects are answered as non-fatal errors:
  201 ``{"message": "success", "errors": [{"type", "input_array", "index"}]}`` and every
  other object is processed;
- an alias-only user is created only by an attributes object with
  ``_update_existing_only: false``; events and purchases for an unknown alias are dropped
  (Braze's "update only" rule for aliases), kept in ``dropped`` for tests to see;
- every answer carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (epoch seconds);
  ``throttle(n)`` answers the next n calls 429;
- ``/users/delete``: at most 50 ``external_ids`` -> 201 ``{"deleted": n, "message": "success"}``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

ARRAYS = ("attributes", "events", "purchases")
_GENDERS = {"M", "F", "O", "N", "P", None}
_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class FakeBraze:
    api_key: str
    limit: int = 75
    rate_limit: int = 50_000
    #: Profiles by external_id or (alias_label, alias_name): merged attributes.
    users: dict[Any, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    throttled: int = 0
    reset_in: float = 2.0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def throttle(self, calls: int, reset_in: float = 2.0) -> None:
        self.throttled = calls
        self.reset_in = reset_in

    async def __aenter__(self) -> FakeBraze:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/users/track", self._track)
        app.router.add_post("/users/delete", self._delete)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ common

    def _headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time() + self.reset_in)),
        }

    async def _gate(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body = await request.read()
        self.calls.append((request.path, body, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return None, web.json_response(
                {"message": "Invalid API key"}, status=401, headers=self._headers(1)
            )
        if self.throttled > 0:
            self.throttled -= 1
            return None, web.json_response(
                {"message": "API rate limit exceeded"}, status=429, headers=self._headers(0)
            )
        if request.content_type != "application/json":
            self.problems.append(f"Content-Type {request.content_type}")
            return None, _fatal("Bad Request", self._headers(1))
        try:
            return orjson.loads(body), None
        except orjson.JSONDecodeError:
            return None, _fatal("Bad Request", self._headers(1))

    # ------------------------------------------------------------ endpoints

    async def _track(self, request: web.Request) -> web.Response:
        payload, refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        headers = self._headers(self.rate_limit - 1)
        if not isinstance(payload, dict) or set(payload) - set(ARRAYS):
            return _fatal("Bad Request", headers)
        arrays = {name: payload.get(name, []) for name in ARRAYS}
        if not all(isinstance(items, list) for items in arrays.values()):
            return _fatal("Bad Request", headers)
        total = sum(len(items) for items in arrays.values())
        if total > self.limit:
            self.problems.append(f"{total} objects in one request (limit {self.limit})")
            return _fatal("Max Input Length Exceeded", headers)
        errors: list[dict[str, Any]] = []
        counts = dict.fromkeys(ARRAYS, 0)
        for name in ARRAYS:  # Braze processes attributes, then events, then purchases
            for index, item in enumerate(arrays[name]):
                why = _problem(name, item)
                if why is not None:
                    errors.append({"type": why, "input_array": name, "index": index})
                    continue
                counts[name] += 1
                self._apply(name, item)
        answer: dict[str, Any] = {"message": "success"}
        for name in ARRAYS:
            if arrays[name]:
                answer[f"{name}_processed"] = counts[name]
        if errors:
            answer["errors"] = errors
        return web.json_response(answer, status=201, headers=headers)

    async def _delete(self, request: web.Request) -> web.Response:
        payload, refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        ids = payload.get("external_ids") if isinstance(payload, dict) else None
        headers = self._headers(self.rate_limit - 1)
        if not isinstance(ids, list) or not ids:
            return _fatal("No Recipients", headers)
        if len(ids) > 50:
            return _fatal("The max number of ids per request was exceeded", headers)
        for user in ids:
            self.deleted.append(user)
            self.users.pop(user, None)
        return web.json_response(
            {"deleted": len(ids), "message": "success"}, status=201, headers=headers
        )

    def _apply(self, name: str, item: dict[str, Any]) -> None:
        key = _user_key(item)
        flag = item.get("_update_existing_only")
        if key not in self.users:
            # Aliases: attributes create the user only with an explicit false; events and
            # purchases never do ("update only" is always true for them).
            creates = flag is False if "user_alias" in item else not flag
            if name != "attributes" and "user_alias" in item:
                creates = False
            if not creates:
                self.dropped.append(item)
                return
            self.users[key] = {}
        if name == "attributes":
            self.users[key].update({k: v for k, v in item.items() if k != "_update_existing_only"})
        else:
            (self.events if name == "events" else self.purchases).append(item)


def _fatal(message: str, headers: dict[str, str]) -> web.Response:
    return web.json_response({"message": message, "errors": [message]}, status=400, headers=headers)


def _user_key(item: dict[str, Any]) -> Any:
    if "external_id" in item:
        return item["external_id"]
    if "user_alias" in item:
        alias = item["user_alias"]
        return (alias["alias_label"], alias["alias_name"])
    return item.get("braze_id") or item.get("email") or item.get("phone")


def _iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _problem(array: str, item: Any) -> str | None:
    """Braze's non-fatal error ``type`` for an invalid object; None when it is valid."""
    if not isinstance(item, dict):
        return "object must be a JSON object"
    alias = item.get("user_alias")
    if alias is not None and not (
        isinstance(alias, dict)
        and isinstance(alias.get("alias_name"), str)
        and isinstance(alias.get("alias_label"), str)
    ):
        return "'user_alias' must contain 'alias_name' and 'alias_label'"
    if not any(item.get(k) for k in ("external_id", "user_alias", "braze_id", "email", "phone")):
        return "'external_id' or 'braze_id' or 'user_alias' is required"
    if array == "attributes":
        if item.get("gender", None) not in _GENDERS:
            return "gender must be one of M, F, O, N, P or null"
        if "dob" in item and not (isinstance(item["dob"], str) and _DOB.match(item["dob"])):
            return "dob must be a string in YYYY-MM-DD format"
        if any(key.startswith("$") for key in item):
            return "attribute names cannot begin with $"
        return None
    if not _iso(item.get("time")):
        return "'time' is required and must be a valid ISO 8601 timestamp"
    properties = item.get("properties", {})
    if not isinstance(properties, dict):
        return "properties must be an object"
    for key, value in properties.items():
        if not key or len(key) > 255 or key.startswith("$"):
            return f"invalid property name {key[:20]!r}"
        if isinstance(value, str) and len(value) > 255:
            return f"property {key[:20]!r} is longer than 255 characters"
    if array == "events":
        if not isinstance(item.get("name"), str) or not item["name"]:
            return "'name' is required"
        return None
    product_id = item.get("product_id")
    if not isinstance(product_id, str) or not product_id or len(product_id) > 255:
        return "'product_id' is required and must be at most 255 characters"
    currency = item.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        return "'currency' must be an ISO 4217 currency code"
    if isinstance(item.get("price"), bool) or not isinstance(item.get("price"), int | float):
        return "'price' is required and must be a number"
    quantity = item.get("quantity", 1)
    if not isinstance(quantity, int) or not 1 <= quantity <= 100:
        return "'quantity' must be an integer from 1 to 100"
    return None
