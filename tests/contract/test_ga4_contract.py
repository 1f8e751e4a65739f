from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from destinations.base import Event
from router.spec import format_timestamp
from tests.contract.base import DestinationContract, sample_events


class TestGA4Contract(DestinationContract):
    type_name = "ga4"
    valid_settings: ClassVar[dict[str, Any]] = {
        "measurement_id": "G-TEST12345",
        "api_secret": "ga4-secret-0123456789",
        "user_properties": ["plan"],
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "measurement_id"),
        ({"measurement_id": "UA-1234-1", "api_secret": "ga4-secret-0123456789"}, "measurement_id"),
        ({"measurement_id": "G-TEST12345"}, "api_secret"),
        (
            {
                "measurement_id": "G-TEST12345",
                "api_secret": "ga4-secret-0123456789",
                "event_names": {"Signed Up": "session_start"},
            },
            "event_names",
        ),
        (
            {
                "measurement_id": "G-TEST12345",
                "api_secret": "ga4-secret-0123456789",
                "client_id_field": "context..x",
            },
            "client_id_field",
        ),
    ]
    secrets: ClassVar[list[str]] = ["ga4-secret-0123456789"]
    batch_sizes = (1, 2, 25)

    def events(self) -> list[Event]:
        # GA4 takes events of the last 72 hours only: the shared samples, made recent. One
        # time for the whole run, so two encodings of "the same events" are the same.
        return [{**e, "timestamp": RECENT, "receivedAt": RECENT} for e in sample_events()]


RECENT = format_timestamp(datetime.now(UTC) - timedelta(minutes=5))
