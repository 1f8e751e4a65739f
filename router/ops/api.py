"""The console's JSON API under ``/api/v1/`` (and the live stream), served by the ops server.

Every path under ``/api/`` needs ``Authorization: Bearer <ops.admin_token>``; without a valid
token the answer is 401 whatever the path (so the API's shape is not revealed either).
Errors are JSON ``{"code", "message"}``. Times in answers are UNIX seconds unless named
otherwise (``receivedAt`` is the event's own ISO text).

- GET ``/api/v1/workspace``: sources and destinations (ids, names, types; never settings);
- GET ``/api/v1/destinations?window=1h``: per destination delivered, not delivered, P95;
- GET ``/api/v1/destinations/{id}/delivery?window=1h``: Event Delivery of one destination;
- GET ``/api/v1/destinations/{id}/dlq?reason=&since=&all=&limit=``: dead letters (live ones
  unless ``all=1``);
- GET ``/api/v1/destinations/{id}/dlq/{partition}:{offset}``: one letter in full;
- POST ``/api/v1/destinations/{id}/dlq/redrive``: body ``{"ids": [...]}``, or ``{"reason"}``,
  ``{"since"}`` or ``{"all": true}``;
- GET ``/api/v1/sources/{id}/events?q=&type=&event=&limit=``: the debugger, newest first;
- GET ``/api/v1/sources/{id}/live?q=&type=&event=``: the same, live (text/event-stream);
- GET ``/api/v1/events/{messageId}``: what happened to one event at every destination;
- GET ``/api/v1/violations?window=&source=``: tracking-plan violations per source and plan;
- POST ``/api/v1/privacy/regulations``: body ``{"regulationType": "SUPPRESS" | "UNSUPPRESS" |
  "SUPPRESS_WITH_DELETE", "subjectIds": ["u1", ...], "reason": "..."}`` (Segment's shape;
  ``subjectType``, when given, must be ``USER_ID``): one regulation per user id;
- GET ``/api/v1/privacy/regulations?userId=&limit=``: regulations, newest first, with each
  destination's deletion status; GET ``/api/v1/privacy/regulations/{id}``: one;
- GET ``/api/v1/privacy/suppressions``: the users suppressed now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from router.ops.auth import TokenCheck, error
from router.ops.console import BadRequest, Console, NotFound
from router.ops.debugger import Filters
from router.ops.reading import InvalidMoment, parse_moment
from router.privacy.records import REGULATION_TYPES

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEEPALIVE = 15.0
MAX_LIMIT = 1000


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _int(request: web.Request, name: str, default: int, *, low: int = 1, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"invalid_{name}", f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"invalid_{name}", f"{name} must be between {low} and {high}")
    return value


def _moment(raw: str | None, name: str) -> float | None:
    if not raw:
        return None
    try:
        return parse_moment(raw).timestamp()
    except InvalidMoment as exc:
        raise BadRequest(f"invalid_{name}", str(exc)) from None


def _filters(request: web.Request) -> Filters:
    query = request.query
    return Filters.of(query.get("q"), query.get("type"), query.get("event"))


class ConsoleApi:
    """Routes of the console, added to the ops server's application."""

    def __init__(self, console: Console, tokens: TokenCheck) -> None:
        self.console = console
        self.tokens = tokens
        self.closing = asyncio.Event()

    def close(self) -> None:
        """End every live stream (the server is stopping)."""
        self.closing.set()
        for subscriber in list(self.console.tail.subscribers):
            subscriber.offer("close", None, force=True)

    def install(self, app: web.Application) -> None:
        add = app.router.add_route
        add("GET", "/api/v1/workspace", self.workspace)
        add("GET", "/api/v1/destinations", self.destinations)
        add("GET", "/api/v1/destinations/{id}/delivery", self.delivery)
        add("GET", "/api/v1/destinations/{id}/dlq", self.letters)
        add("POST", "/api/v1/destinations/{id}/dlq/redrive", self.redrive)
        add("GET", "/api/v1/destinations/{id}/dlq/{letter}", self.letter)
        add("GET", "/api/v1/sources/{id}/events", self.events)
        add("GET", "/api/v1/sources/{id}/live", self.live)
        add("GET", "/api/v1/sources/{id}/violations", self.source_violations)
        add("GET", "/api/v1/sources/{id}/schema", self.source_schema)
        add("GET", "/api/v1/events/{message_id}", self.event)
        add("GET", "/api/v1/violations", self.violations)
        add("POST", "/api/v1/privacy/regulations", self.regulate)
        add("GET", "/api/v1/privacy/regulations", self.regulations)
        add("GET", "/api/v1/privacy/regulations/{id}", self.regulation)
        add("GET", "/api/v1/privacy/suppressions", self.suppressions)
        add("*", "/api/{tail:.*}", self.unknown)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        refusal = self.tokens.refusal(request)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, exc.code, exc.message)
        except NotFound as exc:
            return error(404, exc.code, exc.message)
        except web.HTTPException:
            raise
        except Exception:
            logger.exception("console API: %s %s failed", request.method, request.path)
            return error(500, "internal_error", "the console could not answer; see its log")

    # ------------------------------------------------------------ handlers

    async def unknown(self, request: web.Request) -> web.Response:
        return error(404, "not_found", f"no API path {request.method} {request.path}")

    async def workspace(self, _request: web.Request) -> web.Response:
        return _json(self.console.describe())

    async def destinations(self, request: web.Request) -> web.Response:
        return _json(await self.console.overview(request.query.get("window")))

    async def delivery(self, request: web.Request) -> web.Response:
        return _json(
            await self.console.delivery(request.match_info["id"], request.query.get("window"))
        )

    async def letters(self, request: web.Request) -> web.Response:
        query = request.query
        return _json(
            await self.console.letters(
                request.match_info["id"],
                reason=query.get("reason") or None,
                since=_moment(query.get("since"), "since"),
                live=query.get("all") not in ("1", "true", "yes"),
                limit=_int(request, "limit", 100, high=MAX_LIMIT),
            )
        )

    async def letter(self, request: web.Request) -> web.Response:
        return _json(
            await self.console.letter(request.match_info["id"], request.match_info["letter"])
        )

    async def redrive(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            raise BadRequest("invalid_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("invalid_body", "the body must be a JSON object")
        ids = body.get("ids")
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
        ):
            raise BadRequest("invalid_ids", "ids must be a list of letter ids (partition:offset)")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("invalid_reason", "reason must be a string")
        since_raw = body.get("since")
        if since_raw is not None and not isinstance(since_raw, str):
            raise BadRequest("invalid_since", "since must be a time (ISO-8601 or 2h)")
        if not ids and not reason and not since_raw and body.get("all") is not True:
            raise BadRequest(
                "nothing_chosen",
                'choose letters: {"ids": [...]}, {"reason": ...}, {"since": ...} or {"all": true}',
            )
        result = await self.console.redrive(
            request.match_info["id"],
            ids=ids,
            reason=reason,
            since=_moment(since_raw, "since"),
        )
        return _json(result.as_dict())

    async def events(self, request: web.Request) -> web.Response:
        limit = _int(request, "limit", 100, high=MAX_LIMIT)
        return _json(
            await self.console.debugger(request.match_info["id"], _filters(request), limit)
        )

    async def event(self, request: web.Request) -> web.Response:
        return _json(await self.console.event(request.match_info["message_id"]))

    async def violations(self, request: web.Request) -> web.Response:
        source = request.query.get("source") or None
        return _json(await self.console.violations(request.query.get("window"), source))

    async def source_violations(self, request: web.Request) -> web.Response:
        return _json(
            await self.console.violations(request.query.get("window"), request.match_info["id"])
        )

    async def source_schema(self, request: web.Request) -> web.Response:
        """The source's schema as the processors saw it (event names, properties and traits
        with types, counts, first and last seen), merged over the processor instances."""
        return _json(await self.console.source_schema(request.match_info["id"]))

    async def regulate(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            raise BadRequest("invalid_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("invalid_body", "the body must be a JSON object")
        kind = body.get("regulationType")
        if kind not in REGULATION_TYPES:
            raise BadRequest(
                "invalid_regulation_type",
                f"regulationType must be one of {', '.join(REGULATION_TYPES)}",
            )
        subject_type = body.get("subjectType", "USER_ID")
        if subject_type != "USER_ID":
            raise BadRequest(
                "invalid_subject_type", "subjectType must be USER_ID (regulations are by userId)"
            )
        ids = body.get("subjectIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise BadRequest("invalid_subject_ids", "subjectIds must be a list of user ids")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("invalid_reason", "reason must be a string")
        created = await self.console.regulate(kind, ids, reason)
        return _json({"regulations": created})

    async def regulations(self, request: web.Request) -> web.Response:
        limit = _int(request, "limit", 100, high=MAX_LIMIT)
        user_id = request.query.get("userId") or None
        return _json(self.console.regulation_list(user_id, limit))

    async def regulation(self, request: web.Request) -> web.Response:
        return _json(self.console.regulation(request.match_info["id"]))

    async def suppressions(self, _request: web.Request) -> web.Response:
        return _json(self.console.suppression_list())

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``event`` (a new debugger entry matching the filters),
        ``outcome`` (a delivery outcome of an entry), ``skipped`` (entries this reader was too
        slow for), and a comment every 15 s to keep proxies from closing the stream."""
        subscriber = self.console.subscribe(request.match_info["id"], _filters(request))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        tail = self.console.tail
        try:
            await response.prepare(request)
            await response.write(b": connected\n\n")
            reported = 0
            while not self.closing.is_set():
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        kind, item = await subscriber.queue.get()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if kind == "close":
                    break
                if kind == "event":
                    if not tail.matches(item, subscriber.filters):
                        continue
                    (data,) = await self.console.views([item])
                else:
                    data = item
                await response.write(
                    b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                )
                if subscriber.skipped != reported:
                    reported = subscriber.skipped
                    await response.write(
                        b"event: skipped\ndata: " + orjson.dumps({"count": reported}) + b"\n\n"
                    )
        except ConnectionError:
            pass  # the reader went away
        finally:
            tail.unsubscribe(subscriber)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response
