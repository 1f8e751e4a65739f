"""The two privacy topics and their record formats (both compacted: the latest record per key
is the state).

``privacy.suppressions``: key = the userId (UTF-8), value = JSON
``{"v": 1, "userId", "reason", "at", "regulationId"}`` while the user is suppressed; a
tombstone (null value) unsuppresses. Every processor, delivery agent and console reads it
whole at start and follows it.

``privacy.regulations``: key = the regulation id, value = the whole regulation as it stands
(each change writes it again with ``revision`` one higher)::

    {"v": 1, "id": "reg-3f2a9c0b7d1e4a55b6c7", "revision": 4,
     "type": "SUPPRESS" | "UNSUPPRESS" | "SUPPRESS_WITH_DELETE",   # Segment's names
     "userId": "u1", "reason": "GDPR art. 17 request #1234" | null,
     "createdAt": "2026-11-23T10:00:00.000Z", "updatedAt": "...",
     "status": "running" | "finished" | "failed",
     "destinations": {                       # deletions only: one entry per destination
        "<destination id>": {
          "type": "amplitude",
          "status": "pending" | "done" | "failed" | "not_supported",
          "reason": null | "http_503" | "<why not supported>" | ...,
          "message": null | "HTTP 503 from amplitude.com",   # credentials masked
          "attempts": 2, "maxAttempts": 10,
          "retrying": true | false,          # failed: whether another attempt will come
          "nextAttemptAt": null | "...",
          "doneAt": null | "...",
          "history": [{"at", "outcome": "done" | "failed", "reason", "message"}]}}}

A regulation is ``finished`` when every destination is done or not supported, ``failed`` when
one gave up (``maxAttempts`` used), ``running`` otherwise.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from router.spec import format_timestamp, iso_seconds

SUPPRESS: Final = "SUPPRESS"
UNSUPPRESS: Final = "UNSUPPRESS"
SUPPRESS_WITH_DELETE: Final = "SUPPRESS_WITH_DELETE"
REGULATION_TYPES: Final = (SUPPRESS, UNSUPPRESS, SUPPRESS_WITH_DELETE)

DestinationStatus = Literal["pending", "done", "failed", "not_supported"]
#: Attempts kept in a destination's history (the oldest are left out beyond it).
HISTORY_KEPT: Final = 10
#: The longest user id accepted (Segment's own limit on ids is far above what is sane).
MAX_USER_ID: Final = 1024


def iso(seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def new_regulation_id() -> str:
    return "reg-" + uuid.uuid4().hex[:20]


def check_user_id(user_id: str) -> str:
    """The user id as given; ValueError with a sentence for people when it cannot be one."""
    if not user_id or not user_id.strip():
        raise ValueError("the user id is empty")
    if len(user_id) > MAX_USER_ID:
        raise ValueError(f"the user id is longer than {MAX_USER_ID} characters")
    return user_id


# ---------------------------------------------------------------- suppressions


@dataclass(frozen=True, slots=True)
class Suppression:
    user_id: str
    reason: str | None
    at: float
    regulation_id: str | None

    def value(self) -> bytes:
        return orjson.dumps(
            {
                "v": 1,
                "userId": self.user_id,
                "reason": self.reason,
                "at": iso(self.at),
                "regulationId": self.regulation_id,
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "reason": self.reason,
            "at": self.at,
            "regulationId": self.regulation_id,
        }


def parse_suppression(key: bytes | None, value: bytes | None) -> tuple[str, Suppression | None]:
    """(user id, its suppression or None for a tombstone); ValueError when unreadable."""
    if not key:
        raise ValueError("a suppression record without a key")
    user_id = key.decode("utf-8", "replace")
    if value is None:
        return user_id, None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        body = {}
    body = body if isinstance(body, dict) else {}
    reason = body.get("reason")
    regulation = body.get("regulationId")
    return user_id, Suppression(
        user_id,
        reason if isinstance(reason, str) else None,
        iso_seconds(body.get("at")) or 0.0,
        regulation if isinstance(regulation, str) else None,
    )


# ---------------------------------------------------------------- regulations


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    outcome: Literal["done", "failed"]
    reason: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "outcome": self.outcome,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class DestinationDeletion:
    """Where one destination stands with one deletion."""

    type: str
    status: DestinationStatus = "pending"
    reason: str | None = None
    message: str | None = None
    attempts: int = 0
    max_attempts: int = 10
    next_attempt_at: float | None = None
    done_at: float | None = None
    history: tuple[Attempt, ...] = ()

    @property
    def retrying(self) -> bool:
        return self.status == "failed" and self.attempts < self.max_attempts

    @property
    def open(self) -> bool:
        """Another attempt is due at some point."""
        return self.status == "pending" or self.retrying

    def attempted(self, attempt: Attempt, next_at: float | None) -> DestinationDeletion:
        history = (*self.history, attempt)[-HISTORY_KEPT:]
        if attempt.outcome == "done":
            return replace(
                self,
                status="done",
                reason=None,
                message=None,
                attempts=self.attempts + 1,
                next_attempt_at=None,
                done_at=attempt.at,
                history=history,
            )
        attempts = self.attempts + 1
        return replace(
            self,
            status="failed",
            reason=attempt.reason,
            message=attempt.message,
            attempts=attempts,
            next_attempt_at=next_at if attempts < self.max_attempts else None,
            history=history,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "retrying": self.retrying,
            "nextAttemptAt": iso(self.next_attempt_at) if self.next_attempt_at else None,
            "doneAt": iso(self.done_at) if self.done_at else None,
            "history": [attempt.as_dict() for attempt in self.history],
        }


@dataclass(frozen=True, slots=True)
class Regulation:
    id: str
    type: str
    user_id: str
    reason: str | None
    created_at: float
    updated_at: float
    revision: int = 1
    destinations: dict[str, DestinationDeletion] = field(default_factory=dict)

    @property
    def deletes(self) -> bool:
        return self.type == SUPPRESS_WITH_DELETE

    @property
    def status(self) -> str:
        states = list(self.destinations.values())
        if any(state.open for state in states):
            return "running"
        if any(state.status == "failed" for state in states):
            return "failed"
        return "finished"

    def with_destination(
        self, destination_id: str, state: DestinationDeletion, now: float
    ) -> Regulation:
        return replace(
            self,
            destinations={**self.destinations, destination_id: state},
            updated_at=now,
            revision=self.revision + 1,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "id": self.id,
            "revision": self.revision,
            "type": self.type,
            "userId": self.user_id,
            "reason": self.reason,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "status": self.status,
            "destinations": {d: state.as_dict() for d, state in self.destinations.items()},
        }

    def value(self) -> bytes:
        return orjson.dumps(self.as_dict())


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _attempt(item: Any) -> Attempt | None:
    if not isinstance(item, dict) or item.get("outcome") not in ("done", "failed"):
        return None
    return Attempt(
        iso_seconds(item.get("at")) or 0.0,
        item["outcome"],
        _text(item.get("reason")),
        _text(item.get("message")),
    )


def _destination(body: Any) -> DestinationDeletion | None:
    if not isinstance(body, dict):
        return None
    status = body.get("status")
    if status not in ("pending", "done", "failed", "not_supported"):
        return None
    attempts = body.get("attempts")
    max_attempts = body.get("maxAttempts")
    history = body.get("history")
    return DestinationDeletion(
        type=_text(body.get("type")) or "",
        status=status,
        reason=_text(body.get("reason")),
        message=_text(body.get("message")),
        attempts=attempts if isinstance(attempts, int) else 0,
        max_attempts=max_attempts if isinstance(max_attempts, int) else 10,
        next_attempt_at=iso_seconds(body.get("nextAttemptAt")),
        done_at=iso_seconds(body.get("doneAt")),
        history=tuple(
            a for a in map(_attempt, history if isinstance(history, list) else []) if a is not None
        ),
    )


def parse_regulation(value: bytes | None) -> Regulation | None:
    """The regulation in ``value``, or None when it is not one this router can read."""
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    regulation_id = body.get("id")
    kind = body.get("type")
    user_id = body.get("userId")
    created = iso_seconds(body.get("createdAt"))
    if (
        not isinstance(regulation_id, str)
        or kind not in REGULATION_TYPES
        or not isinstance(user_id, str)
        or created is None
    ):
        return None
    destinations: dict[str, DestinationDeletion] = {}
    listed = body.get("destinations")
    for destination_id, state in (listed if isinstance(listed, dict) else {}).items():
        parsed = _destination(state)
        if parsed is not None:
            destinations[str(destination_id)] = parsed
    revision = body.get("revision")
    return Regulation(
        id=regulation_id,
        type=kind,
        user_id=user_id,
        reason=_text(body.get("reason")),
        created_at=created,
        updated_at=iso_seconds(body.get("updatedAt")) or created,
        revision=revision if isinstance(revision, int) else 1,
        destinations=destinations,
    )
