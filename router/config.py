"""The workspace: sources, destinations, tracking plans and runtime settings, from one YAML file.

Validation happens once, on load, and every mistake is reported with its path in the file
(``destinations[1].filters[0].if``), never with the offending value, because values may be
secrets. ``${VAR}`` anywhere in a string is replaced by the environment variable ``VAR``; every
value obtained that way is registered with :data:`SECRETS` so log records never show it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

logger = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Fields every destination relies on to route and deduplicate; transformations never touch them.
PROTECTED_FIELDS = frozenset({"type", "userId", "anonymousId", "messageId", "receivedAt"})


class ConfigError(Exception):
    """The workspace file is unreadable or invalid; ``problems`` holds (path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        header = f"{source}: " if source else ""
        super().__init__(header + f"{len(problems)} problem(s)\n  " + "\n  ".join(lines))


class SecretRegistry(logging.Filter):
    """Remembers values that came from the environment and masks them in every log record."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        # Very short values would mask ordinary words; a secret that short is not one.
        if len(value) >= 4:
            self._values.add(value)

    def values(self) -> list[str]:
        """Every registered value, longest first (so one containing another is masked whole)."""
        return sorted(self._values, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._values:
            message = self.redact(record.getMessage())
            # An empty tuple, not None: mode's formatter (the faust worker's) wraps a None
            # into (None,) and formatting then fails on every record.
            record.msg, record.args = message, ()
        return True

    def install(self) -> None:
        """Attach to every handler of the root logger (handlers, so child loggers are covered)."""
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)


SECRETS = SecretRegistry()


def parse_duration(value: float | int | str) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"4h"``, ``"1d"``, ``"250ms"`` -> seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a duration such as 30s, 15m, 4h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 30s, 15m, 4h, 1d)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


# Seconds, written as 30, "500ms", "30s", "15m", "4h" or "1d".
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class Model(BaseModel):
    """Config base: a typo in a key is an error, not a silently ignored default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- source middleware


class DropFields(Model):
    type: Literal["drop_fields"]
    fields: list[str] = Field(min_length=1)


class HashFields(Model):
    type: Literal["hash_fields"]
    fields: list[str] = Field(min_length=1)
    algorithm: Literal["sha256", "sha1", "md5"] = "sha256"
    salt: str = ""


class RenameFields(Model):
    type: Literal["rename_fields"]
    fields: dict[str, str] = Field(min_length=1)


class AddContext(Model):
    type: Literal["add_context"]
    values: dict[str, Any] = Field(min_length=1)


class EventNameCase(Model):
    type: Literal["event_name_case"]
    case: Literal["lower", "upper", "title", "snake", "kebab", "camel"]


class UserFunction(Model):
    """``module.path:callable``; the callable takes one event dict, returns it (or None to drop)."""

    type: Literal["function"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    options: dict[str, Any] = Field(default_factory=dict)


Middleware = Annotated[
    DropFields | HashFields | RenameFields | AddContext | EventNameCase | UserFunction,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------- destination filters


class SampleFilter(Model):
    """Keep ``fraction`` of matching events; with ``path`` the choice hashes that value."""

    type: Literal["sample"]
    fraction: float = Field(ge=0, le=1)
    path: str | None = None
    condition: str | None = Field(default=None, alias="if")


class DropFilter(Model):
    type: Literal["drop"]
    condition: str = Field(alias="if")


class OnlyFilter(Model):
    """Segment's "only send": drop every event the condition does not match."""

    type: Literal["only"]
    condition: str = Field(alias="if")


def _check_unprotected(fields: Iterable[str], action: str) -> None:
    """No dot path may start at a top-level id: removing or replacing one (``userId.x``
    replaces the id with an object) would deliver events without identity."""
    for field in fields:
        if field.split(".", 1)[0] in PROTECTED_FIELDS:
            raise ValueError(f"{field!r} is a top-level id and cannot be {action}")


class DropPropertiesFilter(Model):
    type: Literal["drop_properties"]
    fields: list[str] = Field(min_length=1)
    condition: str | None = Field(default=None, alias="if")

    @field_validator("fields")
    @classmethod
    def _not_ids(cls, value: list[str]) -> list[str]:
        _check_unprotected(value, "dropped")
        return value


class AllowPropertiesFilter(Model):
    type: Literal["allow_properties"]
    fields: list[str] = Field(min_length=1)
    condition: str | None = Field(default=None, alias="if")

    @field_validator("fields")
    @classmethod
    def _not_ids(cls, value: list[str]) -> list[str]:
        _check_unprotected(value, "filtered")
        return value


Filter = Annotated[
    SampleFilter | DropFilter | OnlyFilter | DropPropertiesFilter | AllowPropertiesFilter,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------- transformations


class RenameEvent(Model):
    type: Literal["rename_event"]
    to: str = Field(min_length=1, max_length=255)
    condition: str | None = Field(default=None, alias="if")


class RenameProperties(Model):
    type: Literal["rename_properties"]
    fields: dict[str, str] = Field(min_length=1)
    condition: str | None = Field(default=None, alias="if")

    @field_validator("fields")
    @classmethod
    def _not_ids(cls, value: dict[str, str]) -> dict[str, str]:
        _check_unprotected([*value, *value.values()], "transformed")
        return value


class SetValues(Model):
    type: Literal["set_values"]
    values: dict[str, Any] = Field(min_length=1)
    condition: str | None = Field(default=None, alias="if")

    @field_validator("values")
    @classmethod
    def _not_ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_unprotected(value, "transformed")
        return value


class DropEvent(Model):
    type: Literal["drop_event"]
    condition: str = Field(alias="if")


Transformation = Annotated[
    RenameEvent | RenameProperties | SetValues | DropEvent, Field(discriminator="type")
]

# ---------------------------------------------------------------- tracking plans


#: Segment's tracking plans list page() and screen() calls as these events: a rule under this
#: name in ``page`` (``screen``) applies to every page (screen) call without a rule of its own.
PAGE_VIEWED = "Page Viewed"
SCREEN_VIEWED = "Screen Viewed"


class PlanRules(Model):
    """JSON Schemas (draft-07) per event; each validates the whole payload.

    ``track``, ``page`` and ``screen`` are keyed by event name (``event`` for track, ``name``
    for page and screen); ``identify``, ``group`` and ``alias`` hold one schema each. An
    event with no rule is unplanned; ``{}`` plans an event without constraining it.
    """

    common: dict[str, Any] | None = None
    track: dict[str, dict[str, Any]] = Field(default_factory=dict)
    page: dict[str, dict[str, Any]] = Field(default_factory=dict)
    screen: dict[str, dict[str, Any]] = Field(default_factory=dict)
    identify: dict[str, Any] | None = None
    group: dict[str, Any] | None = None
    alias: dict[str, Any] | None = None


class TrackingPlan(Model):
    """A plan written in the workspace, or read from ``file`` (ours or Segment's JSON export;
    the workspace loader reads the file and fills ``rules``)."""

    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    description: str = ""
    file: str | None = Field(default=None, min_length=1)
    rules: PlanRules = Field(default_factory=PlanRules)


class ViolationForwarding(Model):
    """Where "Violation Generated" events go: into ``events.raw`` as events of this source."""

    source: str = Field(pattern=ID_PATTERN)


class PlanEnforcement(Model):
    """What a source does with events that break its plan (Segment Protocols' settings)."""

    plan: str
    unplanned_events: Literal["allow", "block"] = "allow"
    unplanned_properties: Literal["allow", "omit"] = "allow"
    violations: Literal["allow", "block", "omit"] = "allow"
    #: ``true``: to ``events.violations`` for review; ``{source: ID}``: through that source's
    #: pipeline to its destinations, like any event.
    forward_violations: bool | ViolationForwarding = False


# ---------------------------------------------------------------- sources and destinations


class Source(Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    write_keys: list[str] = Field(min_length=1)
    environment: str = "production"
    middleware: list[Middleware] = Field(default_factory=list)
    tracking_plan: PlanEnforcement | None = None
    transformations: list[Transformation] = Field(default_factory=list)


class DeliveryOptions(Model):
    """How an agent delivers to one destination; every figure is per destination."""

    batch_size: int = Field(default=1, ge=1, le=10_000)
    concurrency: int = Field(default=8, ge=1, le=512)
    rate_limit: float | None = Field(default=None, gt=0, description="requests per second")
    timeout: Duration = 10.0
    retry_window: Duration = 4 * 3600.0
    backoff_min: Duration = 10.0
    backoff_max: Duration = 300.0
    max_in_flight_events: int = Field(default=10_000, ge=1)
    #: How long a partial batch may wait for more events before it is sent (0: send what
    #: each poll brought at once). Loaders (warehouses, archives) batch by rows and time.
    flush_interval: Duration = 0.0

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliveryOptions:
        if self.backoff_min > self.backoff_max:
            raise ValueError("backoff_min must not exceed backoff_max")
        return self


#: A destination's PII choice: ``allow`` (every declared PII field in clear), or the declared
#: rules (their ``path`` or ``pattern`` as written) it may receive in clear; absent: none.
PiiAllowance = Literal["allow"] | list[str]


class Destination(Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, description="display name, the key in `integrations`")
    type: str = Field(min_length=1)
    enabled: bool = True
    warehouse: bool = False
    settings: dict[str, Any] = Field(default_factory=dict)
    sources: list[str] = Field(min_length=1)
    filters: list[Filter] = Field(default_factory=list)
    transformations: list[Transformation] = Field(default_factory=list)
    delivery: DeliveryOptions = Field(default_factory=DeliveryOptions)
    #: PII this destination may receive in clear (see :class:`PrivacySettings`); by default
    #: every field declared PII is hashed or dropped on its way here.
    pii: PiiAllowance | None = None


# ---------------------------------------------------------------- privacy

#: Names a PII pattern may use: letters, digits, ``_ - $ .`` and the globs ``* ? [ ]``.
_PII_PATTERN = r"^[A-Za-z0-9_$.*?\[\]-]+$"


class PiiField(Model):
    """A field declared PII: one dot path, or a glob over field names (``*email*``, any case)
    matched inside ``properties``, ``traits`` and ``context`` at any depth."""

    path: str | None = Field(default=None, min_length=1)
    pattern: str | None = Field(default=None, pattern=_PII_PATTERN)
    action: Literal["hash", "drop"] = "hash"

    @model_validator(mode="after")
    def _one_selector(self) -> PiiField:
        if (self.path is None) == (self.pattern is None):
            raise ValueError("give exactly one of path or pattern")
        if self.path is not None:
            top = self.path.split(".", 1)[0]
            if top in PROTECTED_FIELDS or self.path in PROTECTED_FIELDS:
                raise ValueError(f"{self.path!r} is a top-level id: routing and deletion need it")
        return self

    @property
    def name(self) -> str:
        """How destinations name this rule in ``pii``: its path or pattern as written."""
        return self.path if self.path is not None else str(self.pattern)


class DeletionSettings(Model):
    """How the regulation worker (ops role) sends deletion requests to destinations."""

    #: Wait this long after a regulation before asking destinations to delete, so events of
    #: the user already on their way (routed before the suppression took effect, in a
    #: request in flight) land first and are deleted with the rest.
    delay: Duration = 30.0
    #: Attempts per destination before a deletion stays failed (every failure is retried).
    max_attempts: int = Field(default=10, ge=1, le=100)
    backoff_min: Duration = 30.0
    backoff_max: Duration = 3600.0

    @model_validator(mode="after")
    def _backoff_order(self) -> DeletionSettings:
        if self.backoff_min > self.backoff_max:
            raise ValueError("backoff_min must not exceed backoff_max")
        return self


class PrivacySettings(Model):
    """PII classification and the deletion worker (suppression lives in Kafka, not here)."""

    #: Fields declared PII: hashed or dropped for every destination that does not allow them.
    pii: list[PiiField] = Field(default_factory=list)
    #: The salt of PII hashes (SHA-256 of salt + value): a secret, or hashes of guessable
    #: values (emails, phone numbers) could be reversed by trying them.
    hash_salt: SecretStr | None = None
    deletion: DeletionSettings = Field(default_factory=DeletionSettings)

    @model_validator(mode="after")
    def _salted(self) -> PrivacySettings:
        if any(rule.action == "hash" for rule in self.pii) and self.hash_salt is None:
            raise ValueError("hash_salt is required when a PII field is hashed")
        if self.hash_salt is not None and len(self.hash_salt.get_secret_value()) < 8:
            raise ValueError("hash_salt must be at least 8 characters")
        names = [rule.name for rule in self.pii]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"PII rules declared more than once: {', '.join(repeated)}")
        return self


# ---------------------------------------------------------------- runtime


class KafkaSettings(Model):
    bootstrap_servers: str | None = None
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    client_id: str = "event-router"
    #: How soon a consumer that stopped heartbeating (a killed process) loses its partitions.
    #: Kafka brokers refuse less than 6 s by default (group.min.session.timeout.ms).
    session_timeout: Duration = Field(default=6.0, ge=1.0, le=300.0)
    #: How long the broker may hold a consumer's fetch that found nothing new. Kafka answers
    #: as soon as a record arrives, so there a longer wait costs no latency and an idle
    #: consumer fetches less often (Kafka's own default is 500 ms). Tansu, the embedded
    #: broker, holds such a fetch for the whole wait, so the default stays short.
    fetch_max_wait: Duration = Field(default=0.02, ge=0.005, le=10.0)


class ProcessorSettings(Model):
    dedup_window: Duration = 24 * 3600.0
    state_dir: str = "./state"
    max_batch: int = Field(default=5000, ge=1, le=100_000)
    poll_timeout: Duration = 0.2
    #: How often each processor publishes its source schemas to ``sources.schema``.
    schema_interval: Duration = Field(default=60.0, gt=0)


class GatewaySettings(Model):
    """The HTTP Tracking API's limits; the listen address is a command-line matter."""

    rate_limit: float | None = Field(default=None, gt=0, description="events/s per write key")
    burst: float | None = Field(default=None, gt=0, description="events; default 1 s worth")
    public_url: str | None = Field(default=None, pattern=r"^https?://")
    read_timeout: Duration = 10.0
    produce_timeout: Duration = 10.0


class OpsSettings(Model):
    """The operations console (``router ops``, part of ``router run``) and its API."""

    #: ``Authorization: Bearer <token>`` for ``/api/v1/*`` and the page's data. Without it
    #: the console answers 401 to everything but health and metrics.
    admin_token: SecretStr | None = None
    #: Also require the token on ``/metrics`` (Prometheus: ``authorization`` in the scrape).
    protect_metrics: bool = False
    #: How long the Event Delivery, violations and per-event history are kept (and the
    #: longest window the console answers for).
    retention: Duration = Field(default=7 * 86400.0, ge=900)
    #: Events the source debugger keeps per source, and how far back it reads at start.
    debugger_events: int = Field(default=500, ge=1, le=10_000)
    debugger_lookback: Duration = 900.0
    #: Where the console keeps its folded state; default ``<processor.state_dir>/ops``.
    state_dir: str | None = None

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        return value


class Workspace(Model):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    sources: list[Source] = Field(min_length=1)
    destinations: list[Destination] = Field(default_factory=list)
    tracking_plans: list[TrackingPlan] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Workspace:
        problems: list[str] = []
        _unique(problems, "sources", [s.id for s in self.sources])
        _unique(problems, "destinations", [d.id for d in self.destinations])
        _unique(problems, "tracking_plans", [p.id for p in self.tracking_plans])
        _unique(problems, "write key", [k for s in self.sources for k in s.write_keys])
        source_ids = {s.id for s in self.sources}
        plan_ids = {p.id for p in self.tracking_plans}
        for i, dest in enumerate(self.destinations):
            problems.extend(
                f"destinations[{i}].sources: unknown source {sid!r}"
                for sid in dest.sources
                if sid not in source_ids
            )
        declared = {rule.name for rule in self.privacy.pii}
        for i, dest in enumerate(self.destinations):
            if isinstance(dest.pii, list):
                problems.extend(
                    f"destinations[{i}].pii: {name!r} is not a PII rule under privacy.pii"
                    for name in dest.pii
                    if name not in declared
                )
        for i, source in enumerate(self.sources):
            plan = source.tracking_plan
            if plan and plan.plan not in plan_ids:
                problems.append(f"sources[{i}].tracking_plan.plan: unknown plan {plan.plan!r}")
            forward = plan.forward_violations if plan else None
            if isinstance(forward, ViolationForwarding):
                where = f"sources[{i}].tracking_plan.forward_violations.source"
                if forward.source not in source_ids:
                    problems.append(f"{where}: unknown source {forward.source!r}")
                elif forward.source == source.id:
                    problems.append(
                        f"{where}: a source cannot receive its own violations; "
                        "forward them to a separate source"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def source_by_id(self, source_id: str) -> Source:
        return next(s for s in self.sources if s.id == source_id)

    def destination_by_id(self, destination_id: str) -> Destination:
        for dest in self.destinations:
            if dest.id == destination_id:
                return dest
        raise KeyError(destination_id)


def _unique(problems: list[str], what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            problems.append(f"{what}: {value!r} is used more than once")
        seen.add(value)


def with_bootstrap(workspace: Workspace, servers: str) -> Workspace:
    """The workspace with ``kafka.bootstrap_servers`` replaced (CLI flag, environment)."""
    kafka = workspace.kafka.model_copy(update={"bootstrap_servers": servers})
    return workspace.model_copy(update={"kafka": kafka})
