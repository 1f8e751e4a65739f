"""Settings of the Amplitude destination (HTTP V2 API, ``/2/httpapi``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

#: Amplitude's event ingestion hosts by data residency.
HOSTS: dict[str, str] = {
    "us": "https://api2.amplitude.com",
    "eu": "https://api.eu.amplitude.com",
}
#: The User Privacy API's hosts by data residency (``/api/2/deletions/users``).
PRIVACY_HOSTS: dict[str, str] = {
    "us": "https://amplitude.com",
    "eu": "https://analytics.eu.amplitude.com",
}


class AmplitudeSettings(BaseModel):
    """Every call becomes an HTTP V2 event: track as itself, page/screen as "Viewed <name>
    Page/Screen", identify as ``$identify`` (user properties), group as ``$identify`` with
    ``groups`` plus ``$groupidentify`` (group properties)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr
    region: Literal["us", "eu"] = "us"
    #: Replaces the region's host (a forwarding proxy); the path stays ``/2/httpapi``.
    api_host: AnyHttpUrl | None = None
    #: Amplitude refuses user and device ids shorter than 5 characters unless told otherwise.
    min_id_length: int | None = Field(default=None, ge=1, le=5)
    #: The group type a group call's groupId is set under (Amplitude "groups" key).
    group_type: str = Field(default="company", min_length=1, max_length=255)
    #: The project's secret key: with ``api_key`` it authenticates the User Privacy API
    #: (privacy deletion); without it deletion is not supported for this destination.
    secret_key: SecretStr | None = None
    #: Who asks for deletions, for Amplitude's audit (``requester``; usually an email).
    deletion_requester: str | None = Field(default=None, min_length=1, max_length=255)
    #: Replaces the region's User Privacy API host (a forwarding proxy).
    privacy_host: AnyHttpUrl | None = None

    @property
    def deletion_url(self) -> str:
        base = (
            str(self.privacy_host).rstrip("/") if self.privacy_host else PRIVACY_HOSTS[self.region]
        )
        return f"{base}/api/2/deletions/users"

    @property
    def url(self) -> str:
        base = str(self.api_host).rstrip("/") if self.api_host else HOSTS[self.region]
        return f"{base}/2/httpapi"
