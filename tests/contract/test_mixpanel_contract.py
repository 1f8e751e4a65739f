from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract


class TestMixpanelContract(DestinationContract):
    type_name = "mixpanel"
    valid_settings: ClassVar[dict[str, Any]] = {
        "project_token": "tok-mixpanel-0123456789",
        "service_account": {
            "username": "router.sa",
            "secret": "sa-secret-abcdef012345",
            "project_id": "31337",
        },
        "region": "eu",
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "project_token"),
        ({"project_token": "tok-mixpanel-0123456789", "region": "mars"}, "region"),
        (
            {"project_token": "tok-mixpanel-0123456789", "service_account": {"username": "x"}},
            "service_account.secret",
        ),
        ({"project_token": "tok-mixpanel-0123456789", "id_merge": "original"}, ""),
    ]
    secrets: ClassVar[list[str]] = ["tok-mixpanel-0123456789", "sa-secret-abcdef012345"]
    batch_sizes = (1, 6, 2000)
    deletion_settings: ClassVar[dict[str, Any] | None] = {
        "project_token": "tok-mixpanel-0123456789",
        "gdpr_token": "gdpr-oauth-0123456789abcdef",
        "region": "eu",
    }
    deletion_secrets: ClassVar[list[str]] = ["gdpr-oauth-0123456789abcdef"]
