from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract

SITE_ID = "site-3f9a1c0b7e"
API_KEY = "cio-key-8d2e44b1a9c07f"


class TestCustomerIOContract(DestinationContract):
    type_name = "customerio"
    valid_settings: ClassVar[dict[str, Any]] = {"site_id": SITE_ID, "api_key": API_KEY}
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"api_key": API_KEY}, "site_id"),
        ({"site_id": SITE_ID}, "api_key"),
        ({"site_id": "a:b-c", "api_key": API_KEY}, "site_id"),
        ({"site_id": SITE_ID, "api_key": API_KEY, "region": "ap"}, "region"),
        ({"site_id": SITE_ID, "api_key": API_KEY, "url": "ftp://x.example"}, "url"),
        ({"site_id": SITE_ID, "api_key": API_KEY, "object_type_id": "companies"}, "object_type_id"),
    ]
    secrets: ClassVar[list[str]] = [SITE_ID, API_KEY]
    batch_sizes = (1, 5, 100, 1000)
    deletion_settings = valid_settings
