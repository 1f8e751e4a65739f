"""Credential redaction for anything a person will read: DLQ records, status records, logs.

Three rules, applied together: values of the plugin's ``SecretStr`` settings are replaced
wherever they appear; headers that carry credentials by name are replaced whole; URL user
info and credential-looking query parameters are replaced. Bodies are cut to a bound after
masking a little more than the bound, so a secret that straddles the cut is masked too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "***"
# Headers whose value is a credential whatever the plugin says.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
    }
)
_SENSITIVE_QUERY_WORDS = ("key", "token", "secret", "password", "auth", "signature", "sig")
# Secrets shorter than this would mask ordinary words; config never accepts ones that short.
_MIN_SECRET = 4


def secret_values(model: BaseModel | Mapping[str, Any] | Iterable[Any] | Any) -> list[str]:
    """Every ``SecretStr``/``SecretBytes`` value inside a settings model, longest first."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            found.append(node.get_secret_value())
        elif isinstance(node, SecretBytes):
            found.append(node.get_secret_value().decode("utf-8", "replace"))
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple | set | frozenset):
            for value in node:
                walk(value)

    walk(model)
    # Longest first, so a secret that contains another is masked whole.
    return sorted({s for s in found if len(s) >= _MIN_SECRET}, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str, secrets: Iterable[str]) -> str:
    """Mask user info and credential-like query parameters, then any known secret value."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (k, MASK if any(w in k.lower() for w in _SENSITIVE_QUERY_WORDS) else v)
                for k, v in pairs
            ],
            safe=MASK,
        )
    rebuilt = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return redact_text(rebuilt, secrets)


def redact_headers(
    headers: Iterable[tuple[str, str]], secrets: Iterable[str], sensitive: Iterable[str] = ()
) -> dict[str, str]:
    """Headers as a dict for JSON; credential headers masked by name, secrets by value."""
    names = SENSITIVE_HEADERS | {h.lower() for h in sensitive}
    secret_list = list(secrets)
    out: dict[str, str] = {}
    for name, value in headers:
        out[str(name)] = MASK if name.lower() in names else redact_text(str(value), secret_list)
    return out


def cut_body(body: bytes, limit: int, secrets: Iterable[str]) -> tuple[str, bool]:
    """About ``limit`` bytes as text (bad UTF-8 replaced), masked; and whether it was cut."""
    secret_list = list(secrets)
    # Mask a window longer than the bound by the longest secret, so none survives half-cut.
    margin = max((len(s.encode()) for s in secret_list), default=0)
    text = redact_text(body[: limit + margin].decode("utf-8", "replace"), secret_list)
    truncated = len(body) > limit
    if truncated:
        text = text[:limit]
    return text, truncated
