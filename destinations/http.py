"""Shared HTTP plumbing: one client per agent, status classification, Retry-After.

Classification follows Segment's delivery rules: retry 429,
408, 5xx except 501 and 505, timeouts and connection errors; everything else that is not
2xx is permanent. Redirects are not followed: a partner API that redirects a POST is
misconfigured, and following it would silently turn the POST into a GET.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit

from destinations.base import (
    ConnectionFailed,
    DestinationError,
    DestinationPlugin,
    Encoded,
    Event,
    InvalidSettings,
    PartnerRequest,
    PartnerResponse,
    RejectedStatus,
    RequestTimeout,
    RetryableStatus,
    SettingsT,
)
from destinations.connections import ConnectionPool, InvalidRequest
from destinations.segment import ItemizedRequest
from router import __version__

logger = logging.getLogger(__name__)

USER_AGENT = f"event-router/{__version__}"
#: Response bytes kept; the rest is not read (a partner's error page is not worth megabytes).
MAX_RESPONSE_BYTES = 64 * 1024
#: Statuses whose ``Retry-After`` is honoured (RFC 9110 defines it for these two and 3xx).
_RETRY_AFTER_STATUSES = frozenset({429, 503})

T = TypeVar("T")


def is_success(status: int) -> bool:
    return 200 <= status < 300


def is_retryable_status(status: int) -> bool:
    """429, 408 and 5xx except 501 (not implemented) and 505 (HTTP version not supported)."""
    if status in (408, 429):
        return True
    return 500 <= status < 600 and status not in (501, 505)


def status_reason(status: int) -> str:
    """A bounded metrics label: ``http_<code>`` for real codes, ``http_other`` otherwise."""
    return f"http_{status}" if 100 <= status < 600 else "http_other"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    Returns None for a missing or unreadable value; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


def raise_for_status(request: PartnerRequest, response: PartnerResponse) -> None:
    """Raise :class:`RetryableStatus` or :class:`RejectedStatus` unless the answer is 2xx."""
    status = response.status
    if is_success(status):
        return
    reason = status_reason(status)
    message = f"HTTP {status} from {urlsplit(request.url).netloc}"
    if is_retryable_status(status):
        retry_after = (
            parse_retry_after(response.header("Retry-After"))
            if status in _RETRY_AFTER_STATUSES
            else None
        )
        raise RetryableStatus(
            message, reason=reason, request=request, response=response, retry_after=retry_after
        )
    raise RejectedStatus(message, reason=reason, request=request, response=response)


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (the last may be shorter)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


class HttpClient:
    """The agent's one HTTP client; every destination sends through it.

    Requests go over keep-alive connections of a :class:`~destinations.connections.
    ConnectionPool` (that module says why not aiohttp's client, with the figures). It has no
    global connection limit: each destination's own concurrency bounds its connections, so a
    slow partner holding its connections cannot starve another one.
    """

    def __init__(
        self, *, user_agent: str = USER_AGENT, max_response_bytes: int = MAX_RESPONSE_BYTES
    ) -> None:
        self.user_agent = user_agent
        self.max_response_bytes = max_response_bytes
        self._pool: ConnectionPool | None = None

    async def start(self) -> None:
        if self._pool is None:
            self._pool = ConnectionPool(
                user_agent=self.user_agent, max_response_bytes=self.max_response_bytes
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("HttpClient is not started")
        return self._pool

    async def send(self, request: PartnerRequest, *, time_limit: float) -> PartnerResponse:
        """Send one request; the answer, whatever its status, or a TransportError."""
        try:
            return await self.pool.request(
                request.method, request.url, request.headers, request.body, time_limit=time_limit
            )
        except TimeoutError as exc:  # before OSError: it is one
            raise RequestTimeout(
                f"no answer within {time_limit:g}s from {_host(request.url)}", request=request
            ) from exc
        except InvalidRequest as exc:
            raise InvalidSettings(f"{exc} (request to {_host(request.url)})") from exc
        except OSError as exc:  # refused, reset, DNS, TLS, or not an HTTP answer
            raise ConnectionFailed(
                f"{type(exc).__name__} talking to {_host(request.url)}: {_short(exc)}",
                request=request,
            ) from exc

    async def probe(self, url: str, *, time_limit: float) -> tuple[bool, str]:
        """Open (and close) a TCP connection to the URL's host: reachable or not, never raises."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(time_limit):
                _reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return False, f"{host}:{port} did not accept a connection within {time_limit:g}s"
        except OSError as exc:
            return False, f"{host}:{port} unreachable: {_short(exc)}"
        writer.close()
        try:
            await writer.wait_closed()
        except OSError as exc:
            logger.debug("closing probe connection to %s:%s: %s", host, port, exc)
        return True, f"{host}:{port} accepts connections"


def _host(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


class HttpDestination(DestinationPlugin[SettingsT, PartnerRequest, PartnerResponse]):
    """A partner spoken to over HTTP: sending, status rules and descriptions are shared.

    Subclasses implement :meth:`encode`; override :meth:`check` when the partner reports
    errors inside a 2xx answer or per event (call :func:`raise_for_status` first).
    """

    @property
    def http(self) -> HttpClient:
        return self.context.http

    async def send(self, request: PartnerRequest) -> PartnerResponse:
        """Send through the agent's shared client; transport failures raise TransportError."""
        return await self.http.send(request, time_limit=self.timeout)

    def check(
        self, request: PartnerRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        """Raise RetryableStatus or RejectedStatus unless the partner accepted the request."""
        raise_for_status(request, response)
        return {}

    def describe_request(
        self, request: PartnerRequest, *, limit: int | None = None
    ) -> dict[str, Any]:
        return self._describe_http_request(request, limit)

    def describe_response(
        self, response: PartnerResponse, *, limit: int | None = None
    ) -> dict[str, Any]:
        return self._describe_http_response(response, limit)


class ItemEncoder(Protocol):
    """What an :class:`ItemizedDestination`'s encoder does: a batch -> itemized requests."""

    def encode(self, events: Sequence[Event]) -> Encoded[ItemizedRequest]: ...


class ItemizedDestination(HttpDestination[SettingsT]):
    """A partner whose requests list items (:class:`ItemizedRequest`) and whose answers name
    the items it refused (Amplitude, GA4's validation server, Mixpanel).

    Subclasses set ``self.encoder`` and implement :meth:`check_items`, the partner's own
    reading of an answer to an itemized request; any other request (a deletion) is checked
    by its status alone.
    """

    encoder: ItemEncoder

    def encode(self, events: Sequence[Event]) -> Encoded[PartnerRequest]:
        encoded = self.encoder.encode(events)
        return Encoded(list(encoded.requests), encoded.failed)

    def check(
        self, request: PartnerRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        if isinstance(request, ItemizedRequest):
            return self.check_items(request, response)
        return super().check(request, response)

    def check_items(
        self, request: ItemizedRequest, response: PartnerResponse
    ) -> Mapping[int, DestinationError]:
        """Per item the partner refused, the error of the event that made it (by position)."""
        raise NotImplementedError
