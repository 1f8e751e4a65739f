"""A third-party-style plugin, found only through an entry point (no @register)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import BaseModel, ConfigDict, SecretStr

from destinations.base import Event, PartnerRequest
from destinations.http import HttpDestination


class AcmeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    api_key: SecretStr


class AcmeDestination(HttpDestination[AcmeSettings]):
    settings_model = AcmeSettings

    def encode(self, events: Sequence[Event]) -> PartnerRequest:
        return PartnerRequest(
            method="POST",
            url="https://acme.example.com/ingest",
            headers=(("X-Api-Key", self.settings.api_key.get_secret_value()),),
            body=orjson.dumps(list(events)),
            message_ids=tuple(str(e.get("messageId", "")) for e in events),
        )
