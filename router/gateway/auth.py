"""Finding the write key of a request and the source it belongs to.

Segment's clients send the key in three ways, depending on their version: HTTP Basic with
the key as the user name and an empty password, a ``writeKey`` field in the JSON body
(analytics-python >= 2.3 sends both), and the ``X-Write-Key`` header some other senders use.
When more than one is present the headers win, Basic first: they are what an operator sees
in a proxy log.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from router.config import Workspace
from router.gateway.errors import Unauthorized

WRITE_KEY_HEADER = "X-Write-Key"
_BASIC = "basic "


def sources_by_write_key(workspace: Workspace) -> dict[str, str]:
    """``write key -> source id``, built once at start (the config validates keys are unique)."""
    return {key: source.id for source in workspace.sources for key in source.write_keys}


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The write key from ``Authorization: Basic`` or ``X-Write-Key``; None if neither is set.

    A malformed Basic header is an error rather than "no key", so a client with a broken
    encoder learns why instead of silently falling back to another key.
    """
    authorization = headers.get("Authorization")
    if authorization and authorization[: len(_BASIC)].lower() == _BASIC:
        try:
            decoded = base64.b64decode(authorization[len(_BASIC) :].strip(), validate=True)
            user = decoded.decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized(
                "invalid_authorization", "the Basic authorization header is not valid base64"
            ) from None
        if user:
            return user
    header = headers.get(WRITE_KEY_HEADER)
    if header:
        return header.strip() or None
    return None


def resolve(
    header_key: str | None, body: Mapping[str, Any] | None, sources: Mapping[str, str]
) -> tuple[str, str]:
    """``(write key, source id)`` for a request, or :class:`Unauthorized` (401)."""
    write_key: Any = header_key
    if write_key is None and body is not None:
        write_key = body.get("writeKey")
    if not write_key:
        raise Unauthorized(
            "missing_write_key",
            "no write key: send it as the HTTP Basic user name, in X-Write-Key, or as writeKey "
            "in the body",
        )
    if not isinstance(write_key, str):
        raise Unauthorized("invalid_write_key", "writeKey must be a string")
    source_id = sources.get(write_key)
    if source_id is None:
        raise Unauthorized("invalid_write_key", "the write key belongs to no configured source")
    return write_key, source_id
