"""From an HTTP request to JSON objects: bounded reads, gzip, JSON, the batch envelope.

Segment's limits are enforced on the decompressed body, because that is
what the clients measure and what the gateway holds in memory: 32 KB for a single call,
500 KB for a batch request, 2,500 events per batch. Reads are bounded in size and time, so
a slow or oversized client costs one connection for at most ``read_timeout`` seconds.
Both ``application/json`` and ``text/plain`` (what analytics-next sends) are parsed as JSON;
the Content-Type is not checked at all, since a client that sent JSON under another label
would otherwise lose its events.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from router import spec
from router.gateway.errors import BadRequest, RequestTimeout, UnsupportedEncoding

# gzip's own framing can make an incompressible body slightly larger than its content.
_GZIP_SLACK = 1024


@dataclass(frozen=True, slots=True)
class Limit:
    """A body size limit and the code a request over it is refused with."""

    max_bytes: int
    code: str
    what: str


SINGLE_LIMIT = Limit(spec.MAX_EVENT_BYTES, "event_too_large", "an event")
BATCH_LIMIT = Limit(spec.MAX_BATCH_BYTES, "batch_too_large", "a batch request")


def _too_large(limit: Limit) -> BadRequest:
    return BadRequest(limit.code, f"{limit.what} must not exceed {limit.max_bytes} bytes")


async def read_body(request: web.BaseRequest, limit: Limit, read_timeout: float) -> bytes:
    """The request body as sent (maybe compressed), refused early when over the limit."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    max_raw = limit.max_bytes + (_GZIP_SLACK if encoding == "gzip" else 0)
    length = request.content_length
    if length is not None and length > max_raw:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(read_timeout):
            # Bounded: every chunk is non-empty and the total stops at max_raw or EOF.
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_raw:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            "request_timeout", f"the request body did not arrive within {read_timeout:g} s"
        ) from None
    return b"".join(chunks)


def decode(raw: bytes, content_encoding: str | None, limit: Limit) -> bytes:
    """Undo ``Content-Encoding: gzip``, never inflating past the limit (zip bombs)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncoding(
            "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, limit.max_bytes + 1)
    except zlib.error:
        raise BadRequest("invalid_gzip", "the body is not valid gzip") from None
    if len(data) > limit.max_bytes:
        raise _too_large(limit)
    if not inflater.eof:
        raise BadRequest("invalid_gzip", "the gzip body is truncated")
    return data


def parse_object(data: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400 ``invalid_json`` / ``invalid_body``."""
    if not data:
        raise BadRequest("invalid_json", "the request body is empty")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class Batch:
    """A ``/v1/batch`` body: items plus what applies to all of them."""

    items: list[Any]
    context: dict[str, Any] | None
    integrations: dict[str, Any] | None
    sent_at: Any


def batch_of(body: dict[str, Any]) -> Batch:
    items = body.get("batch")
    if not isinstance(items, list):
        raise BadRequest("invalid_batch", "batch must be an array of events")
    if len(items) > spec.MAX_BATCH_EVENTS:
        raise BadRequest(
            "too_many_events",
            f"a batch must not hold more than {spec.MAX_BATCH_EVENTS} events (got {len(items)})",
        )
    context = body.get("context")
    integrations = body.get("integrations")
    for name, value in (("context", context), ("integrations", integrations)):
        if value is not None and not isinstance(value, dict):
            raise BadRequest("invalid_batch", f"the batch's {name} must be an object")
    return Batch(items, context or None, integrations or None, body.get("sentAt"))
