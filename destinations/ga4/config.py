"""Settings of the Google Analytics 4 destination (Measurement Protocol)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from destinations.ga4.names import EVENT_NAME, is_reserved_event

#: Measurement Protocol hosts: the global one, and the one that keeps collection in the EU.
HOSTS: dict[str, str] = {
    "global": "https://www.google-analytics.com",
    "eu": "https://region1.google-analytics.com",
}
_PATH = re.compile(r"^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$")


class GA4Settings(BaseModel):
    """Track and page calls to a GA4 web data stream; e-commerce events become GA4's
    recommended events, everything else a custom event with a GA4-legal name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measurement_id: str = Field(pattern=r"^G-[A-Z0-9]{4,20}$")
    api_secret: SecretStr
    region: Literal["global", "eu"] = "global"
    #: Replaces the region's host (a forwarding proxy); the paths stay Google's.
    api_host: AnyHttpUrl | None = None
    #: Where the GA client id is in the event (e.g. ``context.ga_client_id``); otherwise
    #: ``integrations["<name>"].clientId``, then anonymousId, then userId.
    client_id_field: str | None = None
    #: Segment track event name -> GA4 event name, ahead of the built-in e-commerce mapping.
    event_names: dict[str, str] = Field(default_factory=dict)
    #: Traits (from ``context.traits``) sent as GA4 user properties.
    user_properties: list[str] = Field(default_factory=list, max_length=25)
    #: ``engagement_time_msec`` on every event (GA4's Realtime report shows users only with it).
    engagement_time_msec: int = Field(default=1, ge=0)

    @field_validator("client_id_field")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not _PATH.match(value):
            raise ValueError("must be a dot path such as context.ga_client_id")
        return value

    @field_validator("event_names")
    @classmethod
    def _ga4_names(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            if not EVENT_NAME.match(target) or is_reserved_event(target):
                raise ValueError(
                    "GA4 event names are 1-40 letters, digits or underscores starting with a "
                    "letter, and not reserved"
                )
        return value

    @property
    def base_url(self) -> str:
        return str(self.api_host).rstrip("/") if self.api_host else HOSTS[self.region]
