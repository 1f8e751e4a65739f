"""Regulation and suppression records: what is written is what is read back."""

from __future__ import annotations

from types import SimpleNamespace

from router.privacy.records import (
    Attempt,
    DestinationDeletion,
    Regulation,
    parse_regulation,
    parse_suppression,
)
from router.privacy.state import RegulationBook, SuppressionList
from router.privacy.submit import new_regulation
from router.workspace import validate_workspace

WORKSPACE = validate_workspace(
    {
        "sources": [{"id": "web", "write_keys": ["wk"]}],
        "destinations": [
            {
                "id": "hook",
                "name": "Hook",
                "type": "webhook",
                "sources": ["web"],
                "settings": {"url": "http://127.0.0.1:9/"},
            }
        ],
        "privacy": {"deletion": {"delay": "5s", "max_attempts": 2}},
    }
)


def record(key: bytes | None, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value)


def test_a_regulation_survives_its_record() -> None:
    regulation = new_regulation(WORKSPACE, "SUPPRESS_WITH_DELETE", "u1", "ticket 7", 1000.0)
    assert regulation.destinations["hook"] == DestinationDeletion(
        type="webhook", max_attempts=2, next_attempt_at=1005.0
    )
    state = regulation.destinations["hook"].attempted(
        Attempt(1006.0, "failed", "http_503", "HTTP 503"), 1010.0
    )
    later = regulation.with_destination("hook", state, 1006.0)
    assert later.revision == 2 and later.status == "running"
    assert parse_regulation(later.value()) == later
    body = later.as_dict()
    assert body["destinations"]["hook"]["retrying"] is True
    assert body["destinations"]["hook"]["history"][0]["reason"] == "http_503"

    done = state.attempted(Attempt(1011.0, "done"), None)
    assert (done.status, done.attempts, done.reason) == ("done", 2, None)
    assert later.with_destination("hook", done, 1011.0).status == "finished"

    given_up = state.attempted(Attempt(1011.0, "failed", "http_503", "HTTP 503"), 1020.0)
    assert (given_up.retrying, given_up.next_attempt_at) == (False, None)  # 2 of 2 used
    assert later.with_destination("hook", given_up, 1011.0).status == "failed"


def test_the_book_keeps_the_latest_revision_whatever_the_order() -> None:
    first = new_regulation(WORKSPACE, "SUPPRESS_WITH_DELETE", "u1", None, 1000.0)
    second = first.with_destination("hook", DestinationDeletion("webhook", "done"), 1001.0)
    book = RegulationBook()
    seen: list[list[Regulation]] = []
    book.on_change.append(seen.append)
    book.apply([record(b"k", second.value()), record(b"k", first.value()), record(b"k", b"{")])
    assert book.regulations[first.id] == second
    assert book.deleted == {"u1": 1000.0}
    assert book.unreadable == 1
    assert seen == [[second]]


def test_suppressions_follow_records_and_tombstones() -> None:
    suppressions = SuppressionList()
    added: list[set[str]] = []
    suppressions.on_suppressed.append(added.append)
    suppression = new_regulation(WORKSPACE, "SUPPRESS", "u1", "asked", 1000.0)
    value = b'{"v": 1, "userId": "u1", "reason": "asked", "at": "2026-01-01T00:00:00.000Z"}'
    suppressions.apply([record(b"u1", value), record(b"u2", value), record(b"u2", None)])
    assert suppressions.users == {"u1"}
    assert suppressions.details["u1"].reason == "asked"
    assert added == [{"u1"}]
    assert parse_suppression(b"u3", None) == ("u3", None)
    assert suppression.status == "finished"  # nothing to carry out
