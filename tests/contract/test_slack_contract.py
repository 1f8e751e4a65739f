from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract

HOOK = "https://hooks.slack.com/services/T0000/B0000/slack-secret-token-xyz"


class TestSlackContract(DestinationContract):
    type_name = "slack"
    valid_settings: ClassVar[dict[str, Any]] = {
        "webhook_url": HOOK,
        "templates": {"Order Completed": "{{name}} ordered for {{properties.revenue}}"},
        "identify_template": "{{name}} signed in ({{traits.email}})",
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "webhook_url"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": HOOK, "templates": {"A": "{{#x}}oops{{/y}}"}}, "templates"),
        ({"webhook_url": HOOK, "identify_template": "{{/nope}}"}, "identify_template"),
        ({"webhook_url": HOOK, "icon_emoji": "smile"}, "icon_emoji"),
    ]
    secrets: ClassVar[list[str]] = [HOOK]
    batch_sizes = (1, 5)
