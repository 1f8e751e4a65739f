"""User middleware functions for the middleware tests (imported by ``module:callable``)."""

from __future__ import annotations

from typing import Any

CALLS: list[dict[str, Any]] = []
not_callable = 42


def tag(event: dict[str, Any]) -> dict[str, Any]:
    """One-parameter form: mutates and returns the same event."""
    event.setdefault("context", {})["tagged"] = True
    return event


def with_options(event: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Two-parameter form: returns a new event built from the options."""
    return {**event, "properties": {**event.get("properties", {}), **options}}


def defaulted(event: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Second parameter with a default: still called with the options."""
    CALLS.append({"options": options})
    return event


def drop_bots(event: dict[str, Any]) -> dict[str, Any] | None:
    """Drops events from bots."""
    return None if event.get("userId") == "bot" else event


def explode(event: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("kaboom")


def returns_list(event: dict[str, Any]) -> list[Any]:
    return [event]


def too_many(event: dict[str, Any], options: dict[str, Any], extra: int) -> dict[str, Any]:
    return event


def needs_keyword(event: dict[str, Any], *, key: str) -> dict[str, Any]:
    return event


def no_params() -> None:
    return None


def variadic(*args: Any) -> dict[str, Any]:
    CALLS.append({"args": len(args)})
    return dict(args[0])


class Enricher:
    """A callable instance: ``__call__`` counts as the function."""

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        event["enriched"] = True
        return event


enricher = Enricher()
