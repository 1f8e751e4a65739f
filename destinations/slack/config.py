"""Settings of the Slack destination (an incoming webhook)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from destinations.slack.template import TemplateError, compile_template


def _check_template(source: str) -> str:
    try:
        compile_template(source)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    return source


class SlackSettings(BaseModel):
    """Post a message per chosen event to a Slack channel's incoming webhook.

    ``templates`` maps track event names to a message template; ``identify_template``
    covers identify calls; ``default_template`` covers track events without their own.
    An event with no template is not posted: it is counted as filtered
    (``router_delivery_filtered_total{reason="not_chosen"}``), never retried or dead-lettered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The whole URL is the credential (``https://hooks.slack.com/services/T../B../...``).
    webhook_url: SecretStr
    templates: dict[str, str] = Field(default_factory=dict)
    identify_template: str | None = None
    default_template: str | None = None
    #: Legacy webhooks only (apps' webhooks post as the app, to their own channel).
    username: str | None = Field(default=None, max_length=80)
    icon_emoji: str | None = Field(default=None, pattern=r"^:[a-z0-9_+\-']+:$")
    icon_url: AnyHttpUrl | None = None
    channel: str | None = Field(default=None, max_length=80)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be the incoming webhook's http(s) URL")
        return value

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for event, source in value.items():
            try:
                _check_template(source)
            except ValueError as exc:
                raise ValueError(f"template of {event!r}: {exc}") from None
        return value

    @field_validator("identify_template", "default_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else _check_template(value)
