"""Shared HTTP plumbing: one aiohttp session per agent, status classification, Retry-After.

Classification follows Segment's delivery rules: retry 429,
408, 5xx except 501 and 505, timeouts and connection errors; everything else that is not
2xx is permanent. Redirects are not followed: a partner API that redirects a POST is
misconfigured, and following it would silently turn the POST into a GET.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp

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
    """The agent's one ``aiohttp.ClientSession``; every destination sends through it.

    The connector has no global connection limit: each destination's own concurrency bounds
    its connections, so a slow partner holding its connections cannot starve another one.
    """

    def __init__(
        self, *, user_agent: str = USER_AGENT, max_response_bytes: int = MAX_RESPONSE_BYTES
    ) -> None:
        self.user_agent = user_agent
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self.user_agent},
                auto_decompress=True,
                raise_for_status=False,
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

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
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient is not started")
        return self._session

    async def send(self, request: PartnerRequest, *, time_limit: float) -> PartnerResponse:
        """Send one request; the answer, whatever its status, or a TransportError."""
        started = time.monotonic()
        try:
            async with self.session.request(
                request.method,
                request.url,
                data=request.body,
                headers=list(request.headers),
                timeout=_timeout(time_limit),
                allow_redirects=False,
            ) as response:
                body, truncated = await self._read_bounded(response)
                return PartnerResponse(
                    status=response.status,
                    # aiohttp's keys are istr (a str subclass); JSON encoders want plain str.
                    headers=tuple((str(k), str(v)) for k, v in response.headers.items()),
                    body=body,
                    elapsed=time.monotonic() - started,
                    body_truncated=truncated,
                )
        except TimeoutError as exc:  # aiohttp's timeouts subclass the builtin one
            raise RequestTimeout(
                f"no answer within {time_limit:g}s from {_host(request.url)}", request=request
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise InvalidSettings(f"invalid URL for {_host(request.url)}") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(
                f"{type(exc).__name__} talking to {_host(request.url)}: {_short(exc)}",
                request=request,
            ) from exc
        except OSError as exc:  # e.g. a socket error raised outside aiohttp's wrappers
            raise ConnectionFailed(
                f"{type(exc).__name__} talking to {_host(request.url)}: {_short(exc)}",
                request=request,
            ) from exc

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        limit = self.max_response_bytes
        length = response.content_length
        if length is not None and length <= limit and "Content-Encoding" not in response.headers:
            # The usual small, uncompressed answer of known length: one read, not a loop.
            return await response.read(), False
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await response.content.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        return body[:limit], len(body) > limit

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


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """One (immutable) ClientTimeout per distinct limit, not one per request."""
    return aiohttp.ClientTimeout(total=seconds)


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
