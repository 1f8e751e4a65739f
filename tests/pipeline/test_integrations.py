"""The integrations object, as Segment documents it: `All` (any case) then the destination's own
key (exact case) decide; an object enables and carries options; `All: false` spares warehouses."""

from __future__ import annotations

import pytest

from router.pipeline.integrations import is_enabled, options_for


@pytest.mark.parametrize(
    ("flags", "name", "warehouse", "enabled"),
    [
        (None, "Mixpanel", False, True),
        ({}, "Mixpanel", False, True),
        ({"All": False}, "Mixpanel", False, False),
        ({"all": False}, "Mixpanel", False, False),
        ({"ALL": False, "Mixpanel": True}, "Mixpanel", False, True),
        ({"All": False, "Mixpanel": {"apiKey": "x"}}, "Mixpanel", False, True),
        ({"Mixpanel": False}, "Mixpanel", False, False),
        ({"mixpanel": False}, "Mixpanel", False, True),  # destination keys are case-sensitive
        ({"All": True, "Mixpanel": False}, "Amplitude", False, True),
        ({"All": False}, "Warehouse", True, True),
        ({"All": False, "Warehouse": False}, "Warehouse", True, False),
        ({"Mixpanel": "yes"}, "Mixpanel", False, True),
    ],
)
def test_is_enabled(flags: object, name: str, warehouse: bool, enabled: bool) -> None:
    assert is_enabled(flags, name, warehouse=warehouse) is enabled


def test_options_object() -> None:
    assert options_for({"Mixpanel": {"apiKey": "x"}}, "Mixpanel") == {"apiKey": "x"}
    assert options_for({"Mixpanel": True}, "Mixpanel") is None
