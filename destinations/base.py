"""The destination plugin contract.

A plugin is four small things (vector's sink layout): a pydantic settings model
(``extra="forbid"``, ``SecretStr`` for credentials), an encoder (a batch of Segment events ->
one :class:`PartnerRequest`), a sender (request -> :class:`PartnerResponse`, through the
agent's shared :class:`~destinations.http.HttpClient`) and a health check. The delivery agent
owns batching, concurrency, retries and accounting; a plugin never sleeps, retries or talks
to Kafka.

Every failure is a :class:`DestinationError`. Its ``retriable`` class attribute decides what
the agent does (retry topic or dead letters); ``reason`` is a short, bounded label used in
metrics and status records (``http_503``, ``timeout``, ``connection``, ``encode`` ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from destinations.redact import cut_body, redact_headers, redact_text, redact_url, secret_values
from router.config import Destination

if TYPE_CHECKING:
    from destinations.http import HttpClient

Event = dict[str, Any]
SettingsT = TypeVar("SettingsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class PartnerRequest:
    """One HTTP request to a partner, covering the events whose ids are in ``message_ids``."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    message_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PartnerResponse:
    """What the partner answered; ``body`` is already cut to the client's bound."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    elapsed: float
    body_truncated: bool = False

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


# ---------------------------------------------------------------- errors


class DestinationError(Exception):
    """Root of every delivery failure; carries the request and response a person needs."""

    retriable: bool = False
    reason: str = "error"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        request: PartnerRequest | None = None,
        response: PartnerResponse | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.request = request
        self.response = response
        self.retry_after = retry_after


class RetryableError(DestinationError):
    """Worth another attempt later: the event goes to the retry topic."""

    retriable = True
    reason = "retryable"


class TransportError(RetryableError):
    """No HTTP answer at all."""

    reason = "connection"


class ConnectionFailed(TransportError):
    """Refused, reset, unreachable, DNS failure (Segment's ECONNREFUSED, ECONNRESET, ...)."""

    reason = "connection"


class RequestTimeout(TransportError):
    """No complete answer within ``delivery.timeout``."""

    reason = "timeout"


class RetryableStatus(RetryableError):
    """429, 408 or a 5xx other than 501/505; ``retry_after`` from the partner when it sent one."""

    reason = "http_5xx"


class PermanentError(DestinationError):
    """Another attempt cannot succeed: the event goes to the dead-letter topic."""

    reason = "rejected"


class RejectedStatus(PermanentError):
    """Any other non-2xx answer (400, 401, 403, 404, 413, 501 ...)."""

    reason = "http_4xx"


class EncodeError(PermanentError):
    """The event cannot be expressed for this partner (missing field, too large ...)."""

    reason = "encode"


class InvalidSettings(PermanentError):
    """The destination's settings do not fit its plugin; ``problems`` has (sub-path, message)."""

    reason = "invalid_settings"

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class UnknownDestinationType(PermanentError):
    """No plugin is registered under the destination's ``type``."""

    reason = "unknown_type"


# ---------------------------------------------------------------- settings


def settings_problems(model: type[BaseModel], settings: Any) -> list[tuple[str, str]]:
    """Validate ``settings``; (sub-path, message) pairs that never echo the offending value."""
    try:
        model.model_validate(settings)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append((error_path(err["loc"]), message.removeprefix("Value error, ")))
        return problems
    return []


def error_path(loc: Sequence[int | str]) -> str:
    """``("headers", "X-Key")`` -> ``headers.X-Key``; ``("items", 0)`` -> ``items[0]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def parse_settings(model: type[BaseModel], settings: Any, *, destination_id: str = "") -> BaseModel:
    problems = settings_problems(model, settings)
    if problems:
        where = f"destination {destination_id!r}: " if destination_id else ""
        listed = "; ".join(f"{path or '(settings)'}: {message}" for path, message in problems)
        raise InvalidSettings(f"{where}invalid settings: {listed}", problems)
    return model.model_validate(settings)


# ---------------------------------------------------------------- the plugin


class DestinationPlugin(ABC, Generic[SettingsT]):
    """One configured destination: settings, encoder, sender and health check.

    Subclasses set ``settings_model`` and implement :meth:`encode`; the default
    :meth:`send`, :meth:`check` and :meth:`health_check` use the shared HTTP plumbing.
    ``type_name`` is set by :func:`destinations.registry.register`.
    """

    type_name: ClassVar[str] = ""
    settings_model: ClassVar[type[BaseModel]]
    #: The partner deduplicates on a key we send (the event's ``messageId``).
    accepts_idempotency_key: ClassVar[bool] = False
    #: Bytes of request/response bodies kept in dead letters and status records.
    detail_body_limit: ClassVar[int] = 8 * 1024

    def __init__(self, destination: Destination, http: HttpClient) -> None:
        self.destination = destination
        self.http = http
        parsed = parse_settings(
            self.settings_model, destination.settings, destination_id=destination.id
        )
        self.settings = cast(SettingsT, parsed)
        self._secrets = secret_values(self.settings)

    @classmethod
    def validate_settings(cls, settings: Any) -> list[tuple[str, str]]:
        return settings_problems(cls.settings_model, settings)

    @property
    def timeout(self) -> float:
        return self.destination.delivery.timeout

    @abstractmethod
    def encode(self, events: Sequence[Event]) -> PartnerRequest:
        """Build one request for these events (same input, same bytes); raise EncodeError."""

    async def send(self, request: PartnerRequest) -> PartnerResponse:
        """Send through the agent's shared client; transport failures raise TransportError."""
        return await self.http.send(request, time_limit=self.timeout)

    def check(self, request: PartnerRequest, response: PartnerResponse) -> None:
        """Raise RetryableStatus or RejectedStatus unless the partner accepted the request."""
        from destinations.http import raise_for_status  # http imports this module

        raise_for_status(request, response)

    async def health_check(self) -> tuple[bool, str]:
        """Can the partner be reached with these settings? Never raises."""
        return True, "no health check for this destination type"

    # ------------------------------------------------------------ what people may read

    def secrets(self) -> list[str]:
        """Credential values from the settings, to be masked wherever they could appear."""
        return list(self._secrets)

    def sensitive_headers(self) -> frozenset[str]:
        """Header names (any case) whose values are credentials for this destination."""
        return frozenset()

    def describe_text(self, text: str) -> str:
        """``text`` (an error message, a log line) with credential values masked."""
        return redact_text(text, self._secrets)

    def describe_request(
        self, request: PartnerRequest, *, limit: int | None = None
    ) -> dict[str, Any]:
        bound = self.detail_body_limit if limit is None else limit
        body, truncated = cut_body(request.body, bound, self._secrets)
        return {
            "method": request.method,
            "url": redact_url(request.url, self._secrets),
            "headers": redact_headers(request.headers, self._secrets, self.sensitive_headers()),
            "body": body,
            "bodyBytes": len(request.body),
            "bodyTruncated": truncated,
        }

    def describe_response(
        self, response: PartnerResponse, *, limit: int | None = None
    ) -> dict[str, Any]:
        bound = self.detail_body_limit if limit is None else limit
        body, truncated = cut_body(response.body, bound, self._secrets)
        return {
            "status": response.status,
            "headers": redact_headers(response.headers, self._secrets),
            "body": body,
            "bodyTruncated": truncated or response.body_truncated,
            "elapsed": round(response.elapsed, 6),
        }
