from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract

API_KEY = "braze-rest-key-5e1f0c2a-77d4"


class TestBrazeContract(DestinationContract):
    type_name = "braze"
    valid_settings: ClassVar[dict[str, Any]] = {
        "rest_endpoint": "https://rest.iad-01.braze.com",
        "api_key": API_KEY,
        "app_id": "app-123",
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"api_key": API_KEY}, "rest_endpoint"),
        ({"rest_endpoint": "https://rest.iad-01.braze.com"}, "api_key"),
        ({"rest_endpoint": "https://rest.iad-01.braze.com", "api_key": "short"}, "api_key"),
        ({"rest_endpoint": "rest.iad-01", "api_key": API_KEY}, "rest_endpoint"),
        (
            {
                "rest_endpoint": "https://rest.iad-01.braze.com",
                "api_key": API_KEY,
                "max_objects_per_request": 76,
            },
            "max_objects_per_request",
        ),
    ]
    secrets: ClassVar[list[str]] = [API_KEY]
    batch_sizes = (1, 5, 75, 750)
    deletion_settings = valid_settings
