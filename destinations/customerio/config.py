"""Settings of the Customer.io destination (Track API, Journeys workspaces)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

#: Track API hosts by account region. Customer.io redirects EU accounts' traffic sent to the
#: US host through US servers, and refuses US accounts' traffic sent to the EU host, so the
#: region must match the account's (Settings > Privacy in Customer.io shows it).
TRACK_HOSTS: dict[str, str] = {
    "us": "https://track.customer.io",
    "eu": "https://track-eu.customer.io",
}


class CustomerIOSettings(BaseModel):
    """Track API credentials and where to send.

    ``site_id`` and ``api_key`` are the workspace's Track API credentials (Basic auth,
    ``site_id:api_key``). ``url`` replaces the region's host (a proxy, or a test server).
    ``object_type_id`` is the object type that ``group`` calls create objects of ("1" is the
    first type a workspace defines, usually Companies); an event may override it with
    ``integrations: {"<name>": {"object_type_id": "2"}}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: SecretStr
    api_key: SecretStr
    region: Literal["us", "eu"] = "us"
    url: AnyHttpUrl | None = None
    object_type_id: str = Field(default="1", pattern=r"^[1-9][0-9]*$")

    @field_validator("site_id", "api_key")
    @classmethod
    def _credential(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        # Said without the value: a message must not narrow down a credential.
        if len(text) < 4 or text != text.strip() or ":" in text:
            raise ValueError("must be the value shown on Customer.io's Track API Keys page")
        return value

    @property
    def base_url(self) -> str:
        return str(self.url).rstrip("/") if self.url is not None else TRACK_HOSTS[self.region]
