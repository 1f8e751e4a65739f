"""What the browser library (analytics-next) needs: CORS and its settings document.

analytics-next fetches ``{cdnURL}/v1/projects/{writeKey}/settings`` and posts each event with
``Content-Type: text/plain`` and an ``Authorization: Basic`` header, which makes the browser
send a CORS preflight first.
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict
from yarl import URL

# Asked-for headers are echoed back; this list answers a preflight that names none.
_DEFAULT_ALLOWED_HEADERS = (
    "authorization, content-type, content-encoding, x-write-key, x-retry-count"
)
_PREFLIGHT_MAX_AGE = "86400"


def cors_headers(origin: str | None) -> dict[str, str]:
    """Headers for an actual (non-preflight) response to a cross-origin request."""
    if not origin:
        return {}
    # The origin is echoed (not "*") so requests made with credentials: "include" work too;
    # the API uses no cookies, so this grants nothing beyond what a write key already does.
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight_headers(origin: str | None, requested_headers: str | None) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        cors_headers(origin) or {"Access-Control-Allow-Origin": "*"}
    )
    headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    headers["Access-Control-Allow-Headers"] = requested_headers or _DEFAULT_ALLOWED_HEADERS
    headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
    headers["Vary"] = "Origin, Access-Control-Request-Headers"
    return headers


def api_host(public_url: str | None, request_host: str, request_scheme: str) -> tuple[str, str]:
    """``(apiHost, protocol)`` for the settings: ``router.example/v1`` and ``https``.

    With ``public_url`` unset the request's own Host header and scheme are used, which is
    right when the browser reaches the gateway directly; behind a proxy set ``public_url``.
    """
    if public_url:
        url = URL(public_url)
        authority = url.raw_authority or request_host
        prefix = url.raw_path.rstrip("/")
        return f"{authority}{prefix}/v1", url.scheme or request_scheme
    return f"{request_host}/v1", request_scheme


def settings_document(write_key: str, host: str, protocol: str) -> dict[str, Any]:
    """The settings analytics-next loads before it sends anything.

    ``integrations`` must exist (the client calls ``Object.keys`` on it). ``Segment.io``
    carries where to send events, so pointing ``cdnURL`` at the gateway is the only setting a
    site needs. ``sampleRate: 0`` stops the client posting its own usage metrics to ``/v1/m``.
    """
    return {
        "integrations": {
            "Segment.io": {"apiKey": write_key, "apiHost": host, "protocol": protocol},
        },
        "metrics": {"sampleRate": 0},
        "plan": {},
        "enabledMiddleware": {},
        "middlewareSettings": {},
        "remotePlugins": [],
    }
