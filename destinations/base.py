"""The destination plugin contract.

A plugin is a few small things (vector's sink layout): a pydantic settings model
(``extra="forbid"``, ``SecretStr`` for credentials), an encoder (a batch of Segment events ->
one or more requests), a sender (request -> response), a check of the response (which events
the partner took) and a health check. The delivery lane owns batching, concurrency, rate
limits, retries and accounting; a plugin never sleeps, retries or touches the router's
topics.

The contract is not HTTP-specific: a request is whatever the plugin sends (an HTTP request,
records for another Kafka cluster, a file, a load into a database) as long as it says which
of the batch's events it covers. HTTP partners subclass :class:`destinations.http.HttpDestination`,
which supplies sending, status classification and descriptions.

One attempt, as the lane runs it::

    encoded = plugin.encode(events)           # requests, plus events that cannot be encoded
    for request in encoded.requests:
        response = await plugin.send(request)   # raises DestinationError for the whole request
        rejected = plugin.check(request, response)  # raises for the whole request, or names
                                                    # the events the partner refused in it

Privacy deletion is part of the contract too: :meth:`DestinationPlugin.deletion_request`
gives the request that deletes everything the partner holds about one user (or says why
there is none), and the regulation worker sends it through the same ``send`` and ``check``.

Every failure is a :class:`DestinationError`. Its ``retriable`` class attribute decides what
the lane does (retry topic or dead letters); ``reason`` is a short, bounded label used in
metrics and status records (``http_503``, ``timeout``, ``connection``, ``encode`` ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from destinations.redact import cut_body, redact_headers, redact_text, redact_url, secret_values
from router.config import SECRETS, Destination, KafkaSettings
from router.spec import EVENT_TYPES, Event

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from destinations.http import HttpClient

__all__ = ["CALL_TYPES", "Event"]

#: Every Segment call type; a plugin narrows ``call_types`` to what its partner takes.
CALL_TYPES: frozenset[str] = EVENT_TYPES


class EventBatch(list[Event]):
    """The events handed to one :meth:`DestinationPlugin.encode`, with, per event and in the
    same order, its JSON exactly as it was read from ``dest.<id>`` (``raw``) and the id of
    the source it came from (``sources``; None where the record named none).

    A plugin that forwards events unchanged (the webhook, Kafka, an archive) may splice the
    bytes into its request instead of serializing the events again; one that partitions by
    source (an archive, a warehouse schema per source) reads the sources. A plugin must
    never assume either is there (tests and tools pass plain lists): use
    :func:`raw_events` and :func:`event_sources`.

    The agent also gives each event's ``messageId`` (``message_ids``, "" where there is none;
    read it with :func:`event_message_ids`). For a plugin whose ``reads_events`` is False the
    agent does not decode the events at all: the batch's entries are then None, and the plugin
    reads ``raw`` and ``message_ids`` only.
    """

    __slots__ = ("_find_sources", "_sources", "message_ids", "raw")

    def __init__(
        self,
        events: list[Event],
        raw: list[bytes],
        sources: list[str | None] | Callable[[], list[str | None]] | None = None,
        message_ids: list[str] | None = None,
    ) -> None:
        super().__init__(events)
        self.raw = raw
        self.message_ids = message_ids
        # A callable is asked on first use: most plugins never read the sources.
        self._sources = None if callable(sources) else sources
        self._find_sources = sources if callable(sources) else None

    @property
    def sources(self) -> list[str | None] | None:
        if self._sources is None and self._find_sources is not None:
            self._sources = self._find_sources()
        return self._sources


def raw_events(events: Sequence[Event]) -> list[bytes] | None:
    """The events' bytes as read from Kafka, when the caller passed an :class:`EventBatch`."""
    raw = getattr(events, "raw", None)
    return raw if isinstance(raw, list) and len(raw) == len(events) else None


def event_message_ids(events: Sequence[Event]) -> list[str]:
    """Each event's ``messageId`` ("" where it has none): the agent's list when the caller
    passed an :class:`EventBatch` with one, else read from the events."""
    known = getattr(events, "message_ids", None)
    if isinstance(known, list) and len(known) == len(events):
        return known
    return [str(event.get("messageId") or "") for event in events]


def event_sources(events: Sequence[Event]) -> list[str | None] | None:
    """Each event's source id, when the caller passed an :class:`EventBatch` that has them."""
    sources = getattr(events, "sources", None)
    return sources if isinstance(sources, list) and len(sources) == len(events) else None


class Request(Protocol):
    """What every request type has: the positions of the events it carries.

    ``covers`` holds positions in the ``events`` given to :meth:`DestinationPlugin.encode`;
    empty means "every one of them" (the common single-request case).
    """

    @property
    def covers(self) -> tuple[int, ...]: ...


SettingsT = TypeVar("SettingsT", bound=BaseModel)
RequestT = TypeVar("RequestT", bound=Request)
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class PartnerRequest:
    """One HTTP request to a partner, covering the events whose ids are in ``message_ids``."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    message_ids: tuple[str, ...] = ()
    covers: tuple[int, ...] = ()


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


@dataclass(frozen=True, slots=True)
class DeletionUnsupported:
    """Why a destination cannot delete a user's data; a regulation lists it as not supported."""

    reason: str


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
        request: Any = None,
        response: Any = None,
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
    """No answer at all."""

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


class UnsupportedType(PermanentError):
    """The destination does not take this call type (the processor normally filters these)."""

    reason = "unsupported_type"


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


# ---------------------------------------------------------------- what a plugin gets


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What the delivery agent lends every plugin it runs.

    ``http``: the agent's one HTTP client (each destination's concurrency bounds its own
    connections). ``kafka``: the router's own cluster settings, for plugins that write to
    Kafka. ``state_dir``: a directory of this destination's own that the plugin may keep files
    in (``<processor.state_dir>/destinations/<id>``; created on first use by the plugin).
    ``registry``: where a plugin with metrics of its own registers them.
    """

    http: HttpClient
    kafka: KafkaSettings | None = None
    state_dir: Path = field(default_factory=lambda: Path("./state"))
    registry: CollectorRegistry | None = None


@dataclass(frozen=True, slots=True)
class Encoded(Generic[RequestT]):
    """What :meth:`DestinationPlugin.encode` made of a batch.

    ``failed``: positions of events that cannot be sent at all, with why (an
    :class:`EncodeError`, an :class:`UnsupportedType`); they are dead-lettered alone and
    the rest of the batch goes out.

    ``skipped``: positions of events the destination leaves out on purpose (not chosen by
    its settings, e.g. a Slack channel that posts only some events), each with a short,
    bounded reason label; they are counted as filtered, like the processor's filters, and
    never retried or dead-lettered.
    """

    requests: Sequence[RequestT]
    failed: Mapping[int, DestinationError] = field(default_factory=dict)
    skipped: Mapping[int, str] = field(default_factory=dict)


# ---------------------------------------------------------------- the plugin


class DestinationPlugin(ABC, Generic[SettingsT, RequestT, ResponseT]):
    """One configured destination: settings, encoder, sender, response check, health check.

    Subclasses set ``settings_model`` and implement :meth:`encode`, :meth:`send`,
    :meth:`check` and the two descriptions. ``type_name`` is set by
    :func:`destinations.registry.register`.
    """

    type_name: ClassVar[str] = ""
    settings_model: ClassVar[type[BaseModel]]
    #: One line for ``router destinations``.
    summary: ClassVar[str] = ""
    #: Segment call types the partner takes; the processor filters the others out
    #: (counted as ``unsupported_type``) so they never reach this destination's topic.
    call_types: ClassVar[frozenset[str]] = CALL_TYPES
    #: Whether :meth:`encode` reads the events themselves. A plugin that forwards them as
    #: they are (the webhook) sets False: the agent then skips decoding each event's JSON,
    #: the largest per-event cost of delivery, and hands it an :class:`EventBatch` of None
    #: entries with ``raw`` and ``message_ids``.
    reads_events: ClassVar[bool] = True
    #: Events handed to one :meth:`encode` when ``delivery.batch_size`` is not set.
    default_batch_size: ClassVar[int] = 1
    #: Most events one :meth:`encode` may get (the partner's batch limit, or the most a
    #: plugin splits into requests itself); larger ``delivery.batch_size`` is capped here.
    max_batch_size: ClassVar[int] = 10_000
    #: The partner deduplicates on a key we send (the event's ``messageId``).
    accepts_idempotency_key: ClassVar[bool] = False
    #: Bytes of request/response bodies kept in dead letters and status records.
    detail_body_limit: ClassVar[int] = 8 * 1024
    #: Why this destination type cannot delete a user's data (what the default
    #: :meth:`deletion_request` answers); plugins that can override the method.
    deletion_unsupported: ClassVar[str] = "the partner offers no API to delete a user's data"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # An inherited reads_events=False speaks for the parent's encode(): a subclass with
        # its own encode() reads the events unless it says otherwise in its own body.
        if "encode" in cls.__dict__ and "reads_events" not in cls.__dict__:
            cls.reads_events = True

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        self.destination = destination
        self.context = context
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

    @property
    def batch_size(self) -> int:
        """Events per :meth:`encode`: ``delivery.batch_size`` if set, else the plugin's default."""
        options = self.destination.delivery
        wanted = options.batch_size if "batch_size" in options.model_fields_set else None
        return max(1, min(wanted or self.default_batch_size, self.max_batch_size))

    @property
    def flush_interval(self) -> float:
        """Seconds a partial batch may wait for more events (``delivery.flush_interval``)."""
        return self.destination.delivery.flush_interval

    def options_for(self, event: Event) -> Mapping[str, Any]:
        """The event's options for this destination: ``integrations[<name>]`` when an object.

        Segment's rule: a non-boolean value under the destination's display name enables it
        and carries destination-specific options (``{"Mixpanel": {"apiSecret": ...}}``).
        """
        flags = event.get("integrations")
        if isinstance(flags, dict):
            options = flags.get(self.destination.name)
            if isinstance(options, dict):
                return options
        return {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open what the plugin keeps open (a producer, a connection pool); may raise."""

    async def stop(self) -> None:
        """Flush and close what :meth:`start` opened; bounded by the caller."""

    async def health_check(self) -> tuple[bool, str]:
        """Can the partner be reached with these settings? Never raises."""
        return True, "no health check for this destination type"

    # ------------------------------------------------------------ one attempt

    @abstractmethod
    def encode(self, events: Sequence[Event]) -> RequestT | Encoded[RequestT]:
        """Requests for these events (same input, same bytes); never changes the events.

        Return one request (covering all of them), or :class:`Encoded` for several requests
        (by endpoint, by size limit) and for events that cannot be encoded. Raising
        :class:`EncodeError` fails the whole batch; the lane then encodes its events one by
        one to find the culprit, so prefer ``Encoded.failed``.
        """

    @abstractmethod
    async def send(self, request: RequestT) -> ResponseT:
        """Send one request; raise a :class:`DestinationError` when there was no answer."""

    @abstractmethod
    def check(self, request: RequestT, response: ResponseT) -> Mapping[int, DestinationError]:
        """Raise when the partner refused the whole request; else the events it refused.

        Keys are indexes into the request's events (into ``request.covers`` when it is set,
        else into the batch), each with its own error, retriable or not: a partner that
        reports per event (Mixpanel's ``failed_records``, Amplitude's throttled users) fails
        only those events, and the rest count as delivered.
        """

    # ------------------------------------------------------------ privacy

    def deletion_request(self, user_id: str) -> RequestT | DeletionUnsupported:
        """The request that deletes everything the partner holds about ``user_id`` (a privacy
        regulation), or why this destination cannot (settings missing, no such API).

        The regulation worker sends it with :meth:`send` and judges the answer with
        :meth:`check`, like any request: ``check`` raising, or naming a refused event, is a
        failed attempt, tried again with backoff. A partner that takes the request and
        deletes later (most do, within days) counts as done once it accepted the request.
        """
        return DeletionUnsupported(self.deletion_unsupported)

    def status_of(self, response: ResponseT) -> int | None:
        """The HTTP-like status of a response, for status records; None when there is none."""
        status = getattr(response, "status", None)
        return status if isinstance(status, int) else None

    # ------------------------------------------------------------ what people may read

    def secrets(self) -> list[str]:
        """Credential values from the settings, to be masked wherever they could appear."""
        return list(self._secrets)

    def _all_secrets(self) -> list[str]:
        # Values the workspace took from the environment are masked as well: a URL written
        # as ${HOOK_URL} may hold a token in its path that no rule could recognise.
        env = SECRETS.values()
        return self._secrets if not env else sorted({*self._secrets, *env}, key=len, reverse=True)

    def describe_text(self, text: str) -> str:
        """``text`` (an error message, a log line) with credential values masked."""
        return redact_text(text, self._all_secrets())

    def describe_request(self, request: RequestT, *, limit: int | None = None) -> dict[str, Any]:
        """The request for people (dead letters, status records), credentials masked."""
        return {"request": self.describe_text(repr(request))[: limit or self.detail_body_limit]}

    def describe_response(self, response: ResponseT, *, limit: int | None = None) -> dict[str, Any]:
        """The answer for people, credentials masked."""
        return {"response": self.describe_text(repr(response))[: limit or self.detail_body_limit]}

    # Shared by the HTTP descriptions, and by plugins that describe HTTP-like parts.
    def _describe_http_request(self, request: PartnerRequest, limit: int | None) -> dict[str, Any]:
        bound = self.detail_body_limit if limit is None else limit
        secrets = self._all_secrets()
        body, truncated = cut_body(request.body, bound, secrets)
        return {
            "method": request.method,
            "url": redact_url(request.url, secrets),
            "headers": redact_headers(request.headers, secrets, self.sensitive_headers()),
            "body": body,
            "bodyBytes": len(request.body),
            "bodyTruncated": truncated,
        }

    def _describe_http_response(
        self, response: PartnerResponse, limit: int | None
    ) -> dict[str, Any]:
        bound = self.detail_body_limit if limit is None else limit
        secrets = self._all_secrets()
        body, truncated = cut_body(response.body, bound, secrets)
        return {
            "status": response.status,
            "headers": redact_headers(response.headers, secrets),
            "body": body,
            "bodyTruncated": truncated or response.body_truncated,
            "elapsed": round(response.elapsed, 6),
        }

    def sensitive_headers(self) -> frozenset[str]:
        """Header names (any case) whose values are credentials for this destination."""
        return frozenset()


#: A plugin of any settings, request and response types (what the lane and registry hold).
AnyPlugin = DestinationPlugin[Any, Any, Any]
