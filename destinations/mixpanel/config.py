"""Settings of the Mixpanel destination (Ingestion API: /import, /engage, /groups)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

#: Mixpanel's ingestion hosts by data residency (projects with EU or India residency must
#: send to their own host, or their events are rejected).
HOSTS: dict[str, str] = {
    "us": "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}


#: The GDPR API's hosts by data residency (``/api/app/data-deletions/v3.0/``).
PRIVACY_HOSTS: dict[str, str] = {
    "us": "https://mixpanel.com",
    "eu": "https://eu.mixpanel.com",
    "in": "https://in.mixpanel.com",
}


class ServiceAccount(BaseModel):
    """An Owner or Admin service account; /import then names the project by ``project_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1)
    secret: SecretStr
    project_id: str = Field(pattern=r"^[0-9]+$")


class MixpanelSettings(BaseModel):
    """Events go to ``/import`` (strict validation, per-event errors); identify updates user
    profiles (``/engage``), group updates group profiles (``/groups``).

    ``/import`` authenticates with the service account when one is set, else with
    ``api_secret`` (the project secret), else with the project token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_token: SecretStr
    api_secret: SecretStr | None = None
    service_account: ServiceAccount | None = None
    region: Literal["us", "eu", "in"] = "us"
    #: Replaces the region's host (a forwarding proxy); the paths stay Mixpanel's.
    api_host: AnyHttpUrl | None = None
    #: The project's ID management: "simplified" sends $device_id/$user_id on every event
    #: and an alias as an event carrying both; "original" turns an alias into $merge.
    id_merge: Literal["simplified", "original"] = "simplified"
    #: The group key a group call's groupId is set under (a Mixpanel "Group Key").
    group_key: str = Field(default="company", min_length=1, max_length=255)
    #: "consolidated": every page is "Loaded a Page" (screens "Loaded a Screen") with the
    #: name as a property; "named": "Viewed <name> Page" / "Viewed <name> Screen".
    page_events: Literal["consolidated", "named"] = "consolidated"
    #: An OAuth token for Mixpanel's GDPR API (Profile & Preferences > Data & Privacy; it
    #: expires after a year): privacy deletion needs it, else it is not supported here.
    gdpr_token: SecretStr | None = None
    #: The regulation deletions are filed under (Mixpanel's ``compliance_type``).
    compliance_type: Literal["GDPR", "CCPA"] = "GDPR"
    #: Replaces the region's GDPR API host (a forwarding proxy).
    privacy_host: AnyHttpUrl | None = None

    @model_validator(mode="after")
    def _merge_needs_a_secret(self) -> MixpanelSettings:
        # Mixpanel accepts $merge only on /import authenticated by the project secret or a
        # service account; with the token alone every alias would be refused.
        if self.id_merge == "original" and self.api_secret is None and not self.service_account:
            raise ValueError("id_merge original needs api_secret or service_account")
        return self

    @property
    def deletion_base(self) -> str:
        return (
            str(self.privacy_host).rstrip("/") if self.privacy_host else PRIVACY_HOSTS[self.region]
        )

    @property
    def base_url(self) -> str:
        return str(self.api_host).rstrip("/") if self.api_host else HOSTS[self.region]
