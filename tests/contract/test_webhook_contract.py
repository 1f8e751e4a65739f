from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract


class TestWebhookContract(DestinationContract):
    type_name = "webhook"
    valid_settings: ClassVar[dict[str, Any]] = {
        "url": "https://hooks.example.com/segment",
        "headers": {"Authorization": "Bearer tok-0123456789", "X-Team": "team-secret-42"},
        "secret": "hmac-secret-abcdef",
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "https://example.com", "method": "GET"}, "method"),
        ({"url": "https://example.com", "secret": "short"}, "secret"),
        ({"url": "https://example.com", "headers": {"Bad Name": "x"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "a\r\nInjected: 1"}}, "headers"),
        ({"url": "https://example.com", "headers": {"Content-Type": "text/plain"}}, "headers"),
        ({"url": "https://example.com", "signature_header": "bad header"}, "signature_header"),
    ]
    secrets: ClassVar[list[str]] = ["Bearer tok-0123456789", "team-secret-42", "hmac-secret-abcdef"]
    batch_sizes = (1, 3, 10)
