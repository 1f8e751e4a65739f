"""The Segment-compatible HTTP Tracking API: ``/v1/*`` -> ``events.raw``.

Apps instrumented with Segment's libraries point their host setting here and change nothing
else. A request is answered 200 ``{"success": true}``
only after Kafka acknowledged its events (``acks="all"``); when that cannot happen in time
the answer is 503, which every Segment client retries. Refusals carry a JSON body with
``code`` and ``message`` (see :mod:`router.gateway.errors`). Batches with some invalid items
are described in :mod:`router.gateway.events`.

What goes on ``events.raw``, one record per event: the stamped event as JSON (``receivedAt``,
``messageId``, corrected ``timestamp``; never ``writeKey``), key ``spec.partition_key(event)``
(userId, else anonymousId), header ``write-key`` with the write key's bytes.

Requests run concurrently and their records are written together
(:class:`router.gateway.producer.ProduceAccumulator`), so many small requests cost a few
produce round trips, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from router import gc_tuning, spec
from router.broker.clients import BatchSender, make_producer
from router.broker.topics import Topics, ensure_topics, topics_for
from router.config import Workspace
from router.gateway import auth, browser, parsing
from router.gateway.errors import (
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Unavailable,
)
from router.gateway.events import EventWriter, rejected_json
from router.gateway.producer import KeyPartitioner, ProduceAccumulator
from router.gateway.ratelimit import RateLimiter
from router.observability.gateway import GatewayMetrics
from router.roles import RoleBase

logger = logging.getLogger(__name__)

SINGLE_CALLS: Final = {
    "identify": "identify",
    "track": "track",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    # analytics-next posts to the first letter of the call type.
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
BATCH_CALLS: Final = ("batch", "import", "b")
SETTINGS_PATH: Final = "/v1/projects/{writeKey}/settings"
_SUCCESS: Final = b'{"success":true}'
_JSON: Final = "application/json"
# How many events the request carried, once known (for the rejected-events metric).
_EVENTS: Final = web.RequestKey("router.events", int)


class Gateway(RoleBase):
    """Serves the Tracking API and writes accepted events to ``events.raw``."""

    name = "gateway"

    def __init__(
        self,
        workspace: Workspace,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        topics: Topics | None = None,
        public_url: str | None = None,
        rate_limit: float | None = None,
        burst: float | None = None,
        read_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        produce_timeout: float = 10.0,
        drain_timeout: float = 10.0,
        max_in_flight_writes: int = 1,
        max_pending_events: int = 100_000,
    ) -> None:
        """Build the role; nothing connects before :meth:`start`.

        Args:
            workspace: sources (write keys) and Kafka settings.
            registry: where the metrics register.
            host: address to listen on.
            port: TCP port; 0 picks a free one (read the bound one from ``.port``).
            topics: topic names (default: from the workspace's topic prefix).
            public_url: how browsers reach the gateway, for the settings' ``apiHost``
                (default: the request's Host header and scheme).
            rate_limit: events per second allowed per write key (None: unlimited).
            burst: bucket size in events (default: one second's worth).
            read_timeout: seconds a client has to send its whole body.
            keepalive_timeout: seconds an idle (or header-dribbling) connection is kept.
            produce_timeout: seconds to wait for Kafka's ack before answering 503.
            drain_timeout: seconds :meth:`stop` waits for requests in flight.
            max_in_flight_writes: coalesced Kafka writes awaiting acks at once (see
                :class:`router.gateway.producer.ProduceAccumulator` before raising it).
            max_pending_events: events waiting for Kafka before new requests get 503.
        """
        self.workspace = workspace
        self.topics = topics or topics_for(workspace.kafka)
        self.host = host
        self.port = port
        self.public_url = public_url
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self.produce_timeout = produce_timeout
        self.drain_timeout = drain_timeout
        self.max_in_flight_writes = max_in_flight_writes
        self.max_pending_events = max_pending_events
        self.metrics = GatewayMetrics(registry)
        self._sources = auth.sources_by_write_key(workspace)
        self._limiter = (
            RateLimiter(self._sources, rate_limit, burst) if rate_limit is not None else None
        )
        self._events = EventWriter(self.topics)
        self._producer: AIOKafkaProducer | None = None
        self._accumulator: ProduceAccumulator | None = None
        self._runner: web.AppRunner | None = None
        self._paths: frozenset[str] = frozenset()
        self._draining = False
        self._gc_tuned = False
        self._active = 0  # requests being handled
        self._idle = asyncio.Event()
        self._idle.set()
        self.app = self._build_app()

    # ------------------------------------------------------------ lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for call, kind in SINGLE_CALLS.items():
            app.router.add_post(f"/v1/{call}", self._single_handler(kind))
        for call in BATCH_CALLS:
            app.router.add_post(f"/v1/{call}", self._batch)
        app.router.add_post("/v1/m", self._client_metrics)
        app.router.add_get(SETTINGS_PATH, self._settings)
        self._paths = frozenset(
            r.canonical for r in app.router.resources() if r.canonical != SETTINGS_PATH
        )
        return app

    async def start(self) -> None:
        """Create the topics, connect the producer, then listen."""
        settings = self.workspace.kafka
        await ensure_topics(settings, [self.topics.raw, self.topics.dlq])
        producer = make_producer(
            settings,
            role="gateway",
            # The accumulator already coalesces requests; lingering would only add latency.
            linger_ms=0,
            # A batch aiokafka cannot deliver expires when its requests stop waiting, so
            # stop() is not held up retrying writes nobody is waiting for.
            request_timeout_ms=max(1000, int(self.produce_timeout * 1000)),
        )
        await producer.start()
        self._producer = producer
        try:
            # Each batch request decodes hundreds of dicts, enough to start a collection every
            # request; with the default thresholds the gateway spent about a fifth of its CPU in
            # the collector (router.gc_tuning says why and what changes).
            gc_tuning.acquire()
            self._gc_tuned = True
            # Fetch metadata now, so the first request does not pay for it.
            partitions = await producer.partitions_for(self.topics.raw)
            await producer.partitions_for(self.topics.dlq)
            self._events = EventWriter(self.topics, KeyPartitioner(sorted(partitions)))
            self._accumulator = ProduceAccumulator(
                BatchSender(producer),
                max_in_flight=self.max_in_flight_writes,
                max_pending=self.max_pending_events,
                timeout=self.produce_timeout,
                on_send=self.metrics.on_produce,
            )
            await self._accumulator.start()
            self._runner = web.AppRunner(
                self.app,
                access_log=None,
                # Decompressing ourselves bounds the inflated size (see parsing.decode).
                auto_decompress=False,
                # Also closes a connection whose request headers never finish arriving.
                keepalive_timeout=self.keepalive_timeout,
                shutdown_timeout=self.drain_timeout,
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        logger.info(
            "gateway listening on http://%s:%d, writing to %s",
            self.host,
            self.port,
            self.topics.raw,
        )

    async def drain(self) -> int:
        """Refuse new events but keep listening; return once no request is in flight.

        Used when the process must finish delivering what it accepted before it stops (the
        embedded broker keeps events in memory): every request from now on is answered 503
        ``shutting_down``, which every Segment client retries, instead of finding the port
        closed. Waits at most ``drain_timeout`` seconds and returns the number of requests
        still in flight then.
        """
        self._draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_timeout):
                await self._idle.wait()
        return self._active

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish, then close the producer.

        Each of the three steps is bounded by ``drain_timeout``; all three take that long
        only while Kafka is down, since requests in flight are waiting for its acks.
        """
        runner, self._runner = self._runner, None
        if runner is not None:
            # Closes the listener, waits up to drain_timeout for handlers, then closes.
            await runner.cleanup()
        accumulator, self._accumulator = self._accumulator, None
        if accumulator is not None:
            await accumulator.stop(self.drain_timeout)
        producer, self._producer = self._producer, None
        if producer is not None:
            # aiokafka's stop() can hang while Kafka is down (aiokafka #1101): bound it.
            try:
                async with asyncio.timeout(self.drain_timeout):
                    await producer.stop()
            except TimeoutError:
                logger.warning(
                    "the gateway's Kafka producer did not stop within %.1f s", self.drain_timeout
                )
        if self._gc_tuned:
            self._gc_tuned = False
            gc_tuning.release()

    def failure(self) -> str | None:
        accumulator = self._accumulator
        if self._runner is not None and accumulator is not None and not accumulator.running:
            return "the gateway's Kafka writer stopped"
        return None

    def health(self) -> tuple[bool, str]:
        accumulator = self._accumulator
        if self._runner is None or accumulator is None:
            return False, "not started"
        if not accumulator.running:
            return False, "the Kafka writer stopped"
        failed_at, ok_at = accumulator.last_error_at, accumulator.last_success_at
        if failed_at is not None and (ok_at is None or failed_at > ok_at):
            # Not a liveness failure: restarting does not bring Kafka back; 503s tell clients.
            return True, f"serving; the last Kafka write failed: {accumulator.last_error}"
        return True, f"serving on {self.host}:{self.port}"

    # ------------------------------------------------------------ cross-cutting

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """CORS, JSON error bodies and metrics for every route (and for unknown ones)."""
        started = time.monotonic()
        path = self._route_label(request)
        origin = request.headers.get("Origin")
        routed = not isinstance(request.match_info.http_exception, web.HTTPNotFound)
        response: web.StreamResponse
        self.metrics.in_flight.inc()
        self._active += 1
        self._idle.clear()
        preflight = request.method == "OPTIONS" and routed
        try:
            if self._draining and not preflight:
                raise Unavailable("shutting_down", "the router is shutting down; retry")
            if preflight:
                response = web.Response(
                    status=204,
                    headers=browser.preflight_headers(
                        origin, request.headers.get("Access-Control-Request-Headers")
                    ),
                )
            else:
                response = await handler(request)
        except GatewayError as exc:
            if path != "other" and exc.status not in (404, 405):
                self.metrics.on_rejected(exc.code, request.get(_EVENTS, 1))
            response = _error(exc)
        except web.HTTPException as exc:
            # aiohttp's own 404/405 (unknown path, wrong method) get the same JSON shape.
            response = _error(_from_http(exc, request))
            if exc.status == 405:
                response.headers.update({"Allow": exc.headers.get("Allow", "")})
        except Exception:
            # A bug: still a JSON body (clients parse it), and 500 is retried by every client.
            logger.exception("unexpected error handling %s %s", request.method, request.path)
            response = _error(
                InternalError("internal_error", "the gateway failed to handle the request")
            )
        finally:
            self.metrics.in_flight.dec()
            self._active -= 1
            if not self._active:
                self._idle.set()
        if not preflight:
            response.headers.update(browser.cors_headers(origin))
        self.metrics.on_request(path, response.status, time.monotonic() - started)
        # With the collector's thresholds raised, cyclic garbage waits for a full collection:
        # one at most once a second (a no-op without the settings; router.gc_tuning).
        gc_tuning.collect_due()
        return response

    def _route_label(self, request: web.Request) -> str:
        """The route template for metrics, also for a wrong method (aiohttp gives no route)."""
        resource = request.match_info.route.resource
        if resource is not None:
            return resource.canonical
        path = request.path
        if path in self._paths:
            return path
        if path.startswith("/v1/projects/") and path.endswith("/settings") and path.count("/") == 4:
            return SETTINGS_PATH
        return "other"

    def _writer(self) -> ProduceAccumulator:
        accumulator = self._accumulator
        if accumulator is None:
            raise Unavailable("shutting_down", "the gateway is not running; retry")
        return accumulator

    # ------------------------------------------------------------ handlers

    def _single_handler(self, kind: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._single(request, kind)

        return handle

    def _deadline(self) -> float:
        """When a request that has its body must be answered: ``produce_timeout`` from then,
        whatever the time goes to (parsing, waiting for a write slot, Kafka's ack)."""
        return asyncio.get_running_loop().time() + self.produce_timeout

    async def _single(self, request: web.Request, kind: str) -> web.StreamResponse:
        received_at = spec.now()
        header_key = auth.key_from_headers(request.headers)
        if header_key is not None:
            auth.resolve(header_key, None, self._sources)  # 401 before reading the body
        raw = await parsing.read_body(request, parsing.SINGLE_LIMIT, self.read_timeout)
        deadline = self._deadline()
        data = parsing.decode(raw, request.headers.get("Content-Encoding"), parsing.SINGLE_LIMIT)
        body = parsing.parse_object(data)
        write_key, source_id = auth.resolve(header_key, body, self._sources)
        if self._limiter is not None:
            self._limiter.check(write_key, 1)
        record = self._events.single(
            body, kind, write_key=write_key, received_at=received_at, sent_bytes=len(data)
        )
        await self._writer().write([record], deadline=deadline)
        self.metrics.on_accepted(source_id, 1)
        return web.Response(body=_SUCCESS, content_type=_JSON)

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        received_at = spec.now()
        header_key = auth.key_from_headers(request.headers)
        if header_key is not None:
            auth.resolve(header_key, None, self._sources)
        raw = await parsing.read_body(request, parsing.BATCH_LIMIT, self.read_timeout)
        deadline = self._deadline()
        data = parsing.decode(raw, request.headers.get("Content-Encoding"), parsing.BATCH_LIMIT)
        body = parsing.parse_object(data)
        items = body.get("batch")
        if isinstance(items, list):
            request[_EVENTS] = len(items)
        write_key, source_id = auth.resolve(header_key, body, self._sources)
        batch = parsing.batch_of(body)
        if not batch.items:
            return web.Response(body=_SUCCESS, content_type=_JSON)
        if self._limiter is not None:
            self._limiter.check(write_key, len(batch.items))
        prepared = self._events.batch(
            batch,
            write_key=write_key,
            source_id=source_id,
            received_at=received_at,
            path=request.path,
            measure_items=len(data) > spec.MAX_EVENT_BYTES,
            body_bytes=len(data),
        )
        item_count = prepared.accepted + len(prepared.errors)
        request[_EVENTS] = item_count
        # The decoded items are done with (the records hold their JSON): freed now, while
        # they are still in the CPU's cache, rather than after the Kafka ack, when the
        # requests handled meanwhile have pushed them out. Measured under the gateway bench's
        # load, four alternating runs of three rounds each: median 15.0 us of CPU per event
        # (14.2-16.4) against 17.6 (15.3-20.1).
        del raw, data, body, items, batch
        await self._writer().write(prepared.records, deadline=deadline)
        self.metrics.on_accepted(source_id, prepared.accepted)
        if not prepared.errors:
            return web.Response(body=_SUCCESS, content_type=_JSON)
        reasons = Counter(error.code for error in prepared.errors)
        self.metrics.on_dead_lettered(reasons)
        logger.info(
            "source %s: %d of %d batch items written to %s (%s)",
            source_id,
            len(prepared.errors),
            item_count,
            self.topics.dlq,
            ", ".join(f"{code}={count}" for code, count in sorted(reasons.items())),
        )
        payload = {
            "success": True,
            "accepted": prepared.accepted,
            "rejectedCount": len(prepared.errors),
            "rejected": rejected_json(prepared.errors),
        }
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _client_metrics(self, request: web.Request) -> web.StreamResponse:
        """analytics-next's own usage metrics: read (bounded) and dropped."""
        with contextlib.suppress(GatewayError):
            await parsing.read_body(request, parsing.SINGLE_LIMIT, self.read_timeout)
        return web.Response(body=_SUCCESS, content_type=_JSON)

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        write_key = request.match_info["writeKey"]
        if write_key not in self._sources:
            raise NotFound("unknown_write_key", "the write key belongs to no configured source")
        host, protocol = browser.api_host(self.public_url, request.host, request.scheme)
        return web.Response(
            body=orjson.dumps(browser.settings_document(write_key, host, protocol)),
            content_type=_JSON,
            headers={"Cache-Control": "public, max-age=60"},
        )


def _error(exc: GatewayError) -> web.Response:
    return web.Response(status=exc.status, body=exc.body(), content_type=_JSON, headers=exc.headers)


def _from_http(exc: web.HTTPException, request: web.Request) -> GatewayError:
    if exc.status == 405:
        return MethodNotAllowed(
            "method_not_allowed", f"{request.method} is not allowed on {request.path}"
        )
    if exc.status == 404:
        return NotFound("not_found", f"no such endpoint: {request.path}")
    error = GatewayError("http_error", exc.reason or "request refused")
    error.status = exc.status
    return error
