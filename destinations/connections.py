"""Keep-alive HTTP/1.1 connections to partners: the transport under :class:`HttpClient`.

Why not aiohttp's ClientSession here: delivering one event per request (webhooks, Slack,
Braze's per-user calls), the client's own CPU per request bounds the agent. Measured on a
2-core machine, 8 concurrent POSTs of ~600-byte events to a local aiohttp server cost
109-136 us of client CPU per request through ``ClientSession.post`` and 36-41 us through this
module, which writes the request head itself and parses answers with httptools (the llhttp
parser uvicorn uses). Unbatched delivery spent over half its time in aiohttp before.

What it does, and what a partner sees:

- HTTP/1.1 with keep-alive, plain or TLS (the system's trust store, hostname checked), one
  request per connection at a time, connections kept per (scheme, host, port) for reuse and
  closed after :data:`IDLE_TIMEOUT` idle seconds or when the server says ``Connection: close``.
- Request head: the caller's headers plus ``Host`` and ``Content-Length``, and unless the
  caller gave its own, ``User-Agent``, ``Accept: */*`` and ``Accept-Encoding: identity``
  (answers are small status documents; not decompressing them saves CPU). A server that
  compresses anyway (gzip or deflate) is decoded. URL credentials
  (``https://user:pass@host``) become Basic auth. A header name that is not an HTTP token,
  or a value with a line break, is refused before anything is sent (a header-injection
  guard for user-supplied webhook headers).
- Answers: Content-Length, chunked, or read until the server closes; 1xx interim answers are
  skipped; bodies are kept up to ``max_response_bytes`` (the connection is dropped past that
  rather than read to the end).
- One time limit covers connecting, sending and the whole answer. A connection whose request
  timed out, was cancelled, or failed mid-answer is closed, never reused.
- A reused connection that the server closed before answering a single byte (its keep-alive
  ran out as we wrote) is retried once on a fresh connection, as browsers and libcurl do. The
  request may then reach the partner twice in a rare race; delivery is at-least-once and
  every request carries its idempotency key where the partner has one.

Not supported (not needed by any partner API): proxies, HTTP/2, ``Expect: 100-continue``,
upgrades, request bodies streamed from an iterator.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import re
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Self

import httptools
import yarl

from destinations.base import PartnerResponse

#: Seconds an unused connection is kept (aiohttp's default keep-alive time too).
IDLE_TIMEOUT = 15.0

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Headers this module writes itself; a caller's copy is dropped.
_MANAGED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
#: Headers this module adds unless the caller gave its own.
_DEFAULTED = frozenset({"user-agent", "authorization", "accept", "accept-encoding"})
_NO_BODY_STATUSES = frozenset({204, 304})


class InvalidRequest(ValueError):
    """The request cannot be written (bad URL, header name or value); nothing was sent."""


class BadResponse(ConnectionError):
    """The server answered something that is not HTTP/1.x, or a body that cannot be decoded."""


class Disconnected(ConnectionError):
    """The server closed the connection before the answer was complete."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        #: Whether any byte of an answer arrived (a reused connection that got none may be
        #: retried: the server had closed it before reading the request).
        self.answered = answered


#: What a connection read: status, headers, body (cut to the bound), whether it was cut.
_Read = tuple[int, tuple[tuple[str, str], ...], bytes, bool]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, parsed once per URL."""

    tls: bool
    host: str
    port: int
    #: ``Host`` header value: the host, and the port unless it is the scheme's default.
    authority: str
    #: The request target: percent-encoded path and query, never the fragment.
    path: str
    #: ``Basic ...`` from credentials in the URL, else None.
    authorization: str | None

    @property
    def key(self) -> tuple[bool, str, int]:
        return self.tls, self.host, self.port


@functools.lru_cache(maxsize=4096)
def target(url: str) -> Target:
    """Parse ``url``; :class:`InvalidRequest` unless it is an absolute http(s) URL."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.raw_host or parsed.port is None:
        raise InvalidRequest("URL must be absolute http:// or https://")
    authorization = None
    if parsed.user is not None or parsed.password is not None:
        credentials = f"{parsed.user or ''}:{parsed.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Target(
        tls=parsed.scheme == "https",
        host=parsed.raw_host,
        port=parsed.port,
        authority=parsed.host_port_subcomponent or parsed.raw_host,
        path=parsed.raw_path_qs or "/",
        authorization=authorization,
    )


@functools.lru_cache(maxsize=1024)
def _valid_name(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


def request_head(
    method: str,
    where: Target,
    headers: tuple[tuple[str, str], ...],
    body_length: int,
    user_agent: str,
) -> bytes:
    """The request line and header block, CRLF-terminated; :class:`InvalidRequest` when a
    header would break the framing."""
    lines = [f"{method} {where.path} HTTP/1.1", f"Host: {where.authority}"]
    given: set[str] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered in _MANAGED:
            continue
        if not _valid_name(name):
            raise InvalidRequest(f"header name {name!r} is not an HTTP token")
        if lowered in _DEFAULTED:
            given.add(lowered)
        lines.append(f"{name}: {value}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {user_agent}")
    if where.authorization is not None and "authorization" not in given:
        lines.append(f"Authorization: {where.authorization}")
    if "accept" not in given:
        lines.append("Accept: */*")
    if body_length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_length}")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: identity")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    # Every line break must be one of ours: a value carrying CR or LF would end the header
    # early and let its remainder be read as more headers (or a second request).
    breaks = len(lines)
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise InvalidRequest("a header value contains a line break")
    return text.encode("utf-8")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the httptools parser calls the ``on_*`` methods."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[_Read] | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._head_only = False
        self._answered = False
        self._headers_done = False
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._chunks: list[bytes] = []
        self._size = 0

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self.close()  # bytes nobody asked for: the stream is out of step
            return
        self._answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and self._until_close():
            self._finish()  # the body was delimited by the close itself
            return
        why = "before answering" if not self._answered else "in the middle of its answer"
        self._fail(Disconnected(f"the server closed the connection {why}", answered=self._answered))

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.waiter is None:
            # A second answer behind the one we read, in the same bytes: the stream is out of
            # step, and the next request must not read this one's answer as its own.
            self.reusable = False
        self._headers_done = False
        self._status = 0
        self._headers = []
        self._chunks = []
        self._size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._headers_done = True
        if self._head_only and self._status >= 200:
            # A HEAD answer announces a length but has no body; the parser cannot know that.
            self.reusable = False
            self._finish()

    def on_body(self, chunk: bytes) -> None:
        if self.waiter is None:
            return
        kept = self._size
        self._size += len(chunk)
        if self._size <= self.limit:
            self._chunks.append(chunk)
            return
        self._chunks.append(chunk[: max(0, self.limit - kept)])
        self.reusable = False  # not read to its end: the connection cannot carry another
        self._finish()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._finish()

    # ------------------------------------------------------------ the exchange

    async def exchange(self, payload: bytes, deadline: float, *, head_only: bool) -> _Read:
        """Write one request and wait (until ``deadline``, loop time) for its answer."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Read] = loop.create_future()
        self.waiter = waiter
        self._head_only = head_only
        self._answered = False
        self._headers_done = False
        assert self.transport is not None
        self.transport.write(payload)
        # A timer on the future, not asyncio.timeout(): no task or context manager per request.
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _finish(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        body = b"".join(self._chunks)
        waiter.set_result((self._status, tuple(self._headers), body, self._size > self.limit))

    def _fail(self, error: Exception) -> None:
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def _until_close(self) -> bool:
        """Whether the answer's body runs until the connection closes (no length, not chunked)."""
        if self._status in _NO_BODY_STATUSES or self._head_only:
            return False
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "content-length":
                return False
            if lowered == "transfer-encoding" and "chunked" in value.lower():
                return False
        return True

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[_Read]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class ConnectionPool:
    """Idle connections per (scheme, host, port), no global limit: each destination's
    concurrency bounds how many it opens."""

    def __init__(
        self, *, user_agent: str, max_response_bytes: int, idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        self.user_agent = user_agent
        self.max_response_bytes = max_response_bytes
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._tls: ssl.SSLContext | None = None
        self._closed = False
        #: Connections opened (for tests and debugging: reuse shows as few of them).
        self.opened = 0

    async def request(
        self,
        method: str,
        url: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        *,
        time_limit: float,
    ) -> PartnerResponse:
        """Send one request and read its answer. Raises :class:`InvalidRequest`,
        ``TimeoutError`` or ``OSError`` (refused, reset, TLS, :class:`BadResponse`)."""
        if self._closed:
            raise RuntimeError("connection pool is closed")
        where = target(url)
        payload = request_head(method, where, headers, len(body), self.user_agent)
        if body:
            payload += body
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + time_limit
        head_only = method == "HEAD"
        retried = False
        while True:
            connection = self._take_idle(where.key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(where, deadline)
            self._busy.add(connection)
            try:
                status, answer_headers, answer_body, truncated = await connection.exchange(
                    payload, deadline, head_only=head_only
                )
            except Disconnected as exc:
                self._discard(connection)
                if reused and not exc.answered and not retried and not self._closed:
                    retried = True  # its keep-alive had run out: one fresh connection
                    continue
                raise
            except BaseException:
                self._discard(connection)  # timed out, cancelled, or failed mid-answer
                raise
            self._give_back(where.key, connection)
            answer = PartnerResponse(
                status, answer_headers, answer_body, loop.time() - started, truncated
            )
            return _decoded(answer, self.max_response_bytes)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()

    def _take_idle(self, key: tuple[bool, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        stale_before = time.monotonic() - self.idle_timeout
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if connection.closed or connection.idle_since < stale_before:
                connection.close()
                continue
            assert connection.transport is not None
            if connection.transport.is_closing():
                continue
            return connection
        return None

    def _give_back(self, key: tuple[bool, str, int], connection: _Connection) -> None:
        self._busy.discard(connection)
        if not connection.reusable or connection.closed or self._closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(connection)

    def _discard(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        connection.close()

    async def _connect(self, where: Target, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if where.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        limit = self.max_response_bytes
        async with asyncio.timeout_at(deadline):
            _transport, connection = await loop.create_connection(
                lambda: _Connection(limit),
                where.host,
                where.port,
                ssl=tls,
                server_hostname=where.host if tls is not None else None,
            )
        self.opened += 1
        return connection


def _decoded(answer: PartnerResponse, limit: int) -> PartnerResponse:
    """The answer with a gzip or deflate body decoded (bounded); other bodies as they are."""
    coding = answer.header("content-encoding")
    if not coding or not answer.body:
        return answer
    coding = coding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some servers send it raw.
        raw = answer.body[:1] and (answer.body[0] & 0x0F) != 8
        decoder = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    else:
        return answer
    try:
        body = decoder.decompress(answer.body, limit + 1)
    except zlib.error as exc:
        raise BadResponse(f"undecodable {coding} body: {exc}") from exc
    truncated = answer.body_truncated or len(body) > limit or bool(decoder.unconsumed_tail)
    return dataclasses.replace(answer, body=body[:limit], body_truncated=truncated)
