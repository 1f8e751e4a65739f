"""What the gateway answers when it does not accept a request.

Every refusal is a :class:`GatewayError` carrying the HTTP status, a stable machine-readable
``code`` and a ``message`` for a person. The body is always JSON with both keys, because
analytics-python reads ``res.json()['code']`` on any non-200 answer and, when the key is
missing, treats it as a network error and retries forever (segment-compat.md, section 1).
The status is chosen for how Segment's clients react to it: 400/401/404 are dropped by the
client, 408/429/500/503 are retried.

=====  ==========================================================================
400    ``invalid_json``, ``invalid_body`` (not an object), ``invalid_batch``,
       ``event_too_large`` (32 KB as sent), ``batch_too_large`` (500 KB, inflated),
       ``too_many_events`` (2,500), ``invalid_gzip``, and the spec's event codes:
       ``missing_identity``, ``missing_event``, ``missing_group_id``,
       ``missing_user_id``, ``missing_previous_id``, ``missing_type``,
       ``invalid_type``, ``invalid_event``, ``invalid_field``, ``invalid_timestamp``,
       ``name_too_long``, ``message_id_too_long``, ``nesting_too_deep``
401    ``missing_write_key``, ``invalid_write_key``, ``invalid_authorization``
404    ``not_found`` (path), ``unknown_write_key`` (settings)
405    ``method_not_allowed`` (with ``Allow``)
408    ``request_timeout`` (body not received within the read timeout)
415    ``unsupported_encoding`` (a Content-Encoding other than gzip)
429    ``rate_limited`` (with ``Retry-After`` and ``X-RateLimit-Reset``, in seconds)
500    ``internal_error``
503    ``kafka_timeout``, ``kafka_unavailable``, ``overloaded``, ``shutting_down``
=====  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


class GatewayError(Exception):
    """Root of every refusal; subclasses fix the status (and whether clients retry)."""

    status = 400
    retriable = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> bytes:
        return orjson.dumps({"code": self.code, "message": self.message, **self.extra})


class BadRequest(GatewayError):
    """Malformed or over-limit input: the client drops it, so it must never be retryable."""

    status = 400


class Unauthorized(GatewayError):
    status = 401


class NotFound(GatewayError):
    status = 404


class MethodNotAllowed(GatewayError):
    status = 405


class RequestTimeout(GatewayError):
    """The body did not arrive within the read timeout (a slow or stalled client)."""

    status = 408
    retriable = True


class UnsupportedEncoding(GatewayError):
    status = 415


class RateLimited(GatewayError):
    """Over the write key's event rate; ``retry_after`` is in whole seconds (at least 1)."""

    status = 429
    retriable = True

    def __init__(self, retry_after: int, message: str) -> None:
        seconds = str(retry_after)
        super().__init__(
            "rate_limited",
            message,
            headers={"Retry-After": seconds, "X-RateLimit-Reset": seconds},
        )
        self.retry_after = retry_after


class InternalError(GatewayError):
    """A bug in the gateway; 500 is retried by every client, so no event is given up."""

    status = 500
    retriable = True


class Unavailable(GatewayError):
    """The events could not be made durable on Kafka (or the gateway is stopping)."""

    status = 503
    retriable = True
