"""A fake partner: an aiohttp server on 127.0.0.1 that records requests and fails on demand.

Modes: ``ok`` (200), ``status`` (any status, optionally with Retry-After), ``slow`` (answer
200 after ``delay`` seconds), and refusing connections (``await sink.refuse()`` stops the
listener; ``await sink.accept()`` starts it again on the same port). A ``script`` callable
can decide per request instead (return None to fall back to the mode).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from router.broker.embedded import free_port

Decision = tuple[int, dict[str, str]]
Script = Callable[[list[dict[str, Any]], "Sink"], Decision | None]


@dataclass
class Received:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    events: list[dict[str, Any]]
    status: int = 0

    @property
    def message_ids(self) -> list[str]:
        return [str(e.get("messageId")) for e in self.events]


@dataclass
class Sink:
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    status: int = 503
    retry_after: str | None = None
    delay: float = 2.0
    script: Script | None = None
    requests: list[Received] = field(default_factory=list)
    #: messageId -> times it was answered 2xx (a value above 1 is a duplicate delivery).
    delivered: Counter[str] = field(default_factory=Counter)
    #: messageId -> times it was received at all.
    attempts: Counter[str] = field(default_factory=Counter)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        await self.accept()

    async def stop(self) -> None:
        await self.refuse()

    async def __aenter__(self) -> Sink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def accept(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def refuse(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------ switching modes

    def ok(self) -> None:
        self.mode, self.script = "ok", None

    def fail(self, status: int, retry_after: str | None = None) -> None:
        self.mode, self.status, self.retry_after, self.script = "status", status, retry_after, None

    def slow(self, delay: float = 2.0) -> None:
        self.mode, self.delay, self.script = "slow", delay, None

    # ------------------------------------------------------------ reading what arrived

    @property
    def unique_delivered(self) -> set[str]:
        return set(self.delivered)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.delivered.values() if count > 1)

    def requests_for(self, message_id: str) -> list[Received]:
        return [r for r in self.requests if message_id in r.message_ids]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("batch"), list):
            events = [e for e in parsed["batch"] if isinstance(e, dict)]
        elif isinstance(parsed, dict):
            events = [parsed]
        else:
            events = []
        received = Received(
            at=time.monotonic(),
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            events=events,
        )
        self.requests.append(received)
        for event in events:
            self.attempts[str(event.get("messageId"))] += 1
        decision = self.script(events, self) if self.script is not None else None
        if decision is None:
            decision = await self._by_mode()
        status, headers = decision
        if request.transport is None or request.transport.is_closing():
            status = 0  # the client gave up (timeout) before the answer: not delivered
        received.status = status
        if 200 <= status < 300:
            for event in events:
                self.delivered[str(event.get("messageId"))] += 1
        return web.json_response(
            {"ok": status < 300, "status": status}, status=status, headers=headers
        )

    async def _by_mode(self) -> Decision:
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
            return 200, {}
        if self.mode == "status":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return self.status, headers
        return 200, {}
