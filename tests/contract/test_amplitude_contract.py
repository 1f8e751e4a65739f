from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract


class TestAmplitudeContract(DestinationContract):
    type_name = "amplitude"
    valid_settings: ClassVar[dict[str, Any]] = {
        "api_key": "amp-key-0123456789abcdef",
        "region": "eu",
        "min_id_length": 1,
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "api_key"),
        ({"api_key": "amp-key-0123456789abcdef", "region": "in"}, "region"),
        ({"api_key": "amp-key-0123456789abcdef", "min_id_length": 0}, "min_id_length"),
        ({"api_key": "amp-key-0123456789abcdef", "api_host": "not a url"}, "api_host"),
    ]
    secrets: ClassVar[list[str]] = ["amp-key-0123456789abcdef"]
    batch_sizes = (1, 5, 2000)
    deletion_settings: ClassVar[dict[str, Any] | None] = {
        "api_key": "amp-key-0123456789abcdef",
        "secret_key": "amp-secret-0123456789abcdef",
        "region": "eu",
    }
    deletion_secrets: ClassVar[list[str]] = ["amp-secret-0123456789abcdef"]
