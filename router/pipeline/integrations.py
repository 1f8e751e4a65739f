"""The ``integrations`` object: which destinations an event may reach (Segment's rules).

- A destination's own key (its display name, case-sensitive) decides when present:
  ``false`` disables, ``true`` enables, any other value (an options object) enables and is
  passed to the destination as its options.
- Otherwise ``All`` (matched case-insensitively, default ``true``) decides.
- ``All: false`` does not disable warehouses unless they are named explicitly.
"""

from __future__ import annotations

from typing import Any


def all_flag(integrations: dict[str, Any]) -> bool:
    for key, value in integrations.items():
        if key.lower() == "all":
            return value is not False
    return True


def is_enabled(integrations: Any, destination_name: str, *, warehouse: bool = False) -> bool:
    if not integrations or not isinstance(integrations, dict):
        return True
    if destination_name in integrations:
        return integrations[destination_name] is not False
    if warehouse:
        return True
    return all_flag(integrations)


def options_for(integrations: Any, destination_name: str) -> dict[str, Any] | None:
    """The destination-specific options object, if the event carries one."""
    if not isinstance(integrations, dict):
        return None
    value = integrations.get(destination_name)
    return value if isinstance(value, dict) else None
