"""User middleware that misbehaves in every way the pipeline must survive (``module:callable``).

``properties.mode`` of each event says what to do to it, so one batch mixes them.
"""

from __future__ import annotations

from typing import Any


class _Sulky(dict):  # type: ignore[type-arg]
    """A dict that fails when read: user code can return anything that passes isinstance."""

    def get(self, *args: Any) -> Any:
        raise RuntimeError("not today")


def hostile(event: dict[str, Any]) -> dict[str, Any] | None:
    properties = event.get("properties") or {}
    mode = properties.get("mode")
    if mode == "deep":
        value: Any = 1
        for _ in range(100):
            value = {"a": value}
        properties["x"] = value
    elif mode == "set":
        properties["x"] = {1, 2}  # not JSON
    elif mode == "no_id":
        del event["messageId"]
    elif mode == "no_name":
        del event["event"]
    elif mode == "huge":
        properties["x"] = "x" * 600_000
    elif mode == "sulky":
        return _Sulky(event)
    elif mode == "raise" or event.get("event") == "Raise":
        raise RuntimeError("a bug in the user's function")
    return event
