"""Settings of the Braze destination (REST API ``/users/track``)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

#: Objects (attributes + events + purchases) in one ``/users/track`` request. Braze documents
#: 75 per array for most workspaces, 75 in total for some plans and 50 in total for Monthly
#: Active Users CY 24-25 plans; counting all three arrays together is valid under all of them.
MAX_OBJECTS = 75


class BrazeSettings(BaseModel):
    """``/users/track`` credentials and mapping choices.

    ``rest_endpoint`` is the workspace's REST endpoint (Settings > APIs and Identifiers, e.g.
    ``https://rest.iad-01.braze.com`` or ``https://rest.fra-01.braze.eu``); ``api_key`` a REST
    API key with the ``users.track`` permission (and ``users.delete`` for privacy deletion).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rest_endpoint: AnyHttpUrl
    api_key: SecretStr
    #: Braze app identifier sent with events and purchases (optional).
    app_id: str | None = None
    #: Label of the user alias that carries Segment's anonymousId for users without userId;
    #: null refuses anonymous events instead.
    alias_label: str | None = Field(default="anonymous_id", min_length=1, max_length=255)
    #: "Order Completed" with products -> one Braze purchase per product (Segment's rule);
    #: false sends it as a custom event like any other.
    purchases: bool = True
    #: Only update users Braze already has (``_update_existing_only``); never create one.
    update_existing_only: bool = False
    #: Lower this to 50 on Braze's Monthly Active Users CY 24-25 plans.
    max_objects_per_request: int = Field(default=MAX_OBJECTS, ge=1, le=MAX_OBJECTS)

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        # Said without the value: a message must not narrow down a credential.
        if len(text) < 8 or text != text.strip():
            raise ValueError("must be a Braze REST API key")
        return value

    @property
    def base_url(self) -> str:
        return str(self.rest_endpoint).rstrip("/")
