"""The admin token: ``Authorization: Bearer <ops.admin_token>`` for the console's API (and
``/metrics`` when ``ops.protect_metrics`` is set). Compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from router.config import SECRETS, OpsSettings


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


class TokenCheck:
    """Bearer-token check for the console's paths (and ``/metrics`` if so configured)."""

    def __init__(self, settings: OpsSettings) -> None:
        token = settings.admin_token
        self._token = token.get_secret_value().encode() if token is not None else None
        if token is not None:
            SECRETS.add(token.get_secret_value())  # never in a log line, even if written in clear

    @property
    def configured(self) -> bool:
        return self._token is not None

    def refusal(self, request: web.Request) -> web.Response | None:
        """None when the request carries the token, else the 401 to answer."""
        challenge = {"WWW-Authenticate": 'Bearer realm="event-router"'}
        if self._token is None:
            return error(
                401,
                "console_disabled",
                "the console has no admin token: set ops.admin_token in the workspace",
                **challenge,
            )
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if not given:
            return error(
                401, "missing_token", "send Authorization: Bearer <ops.admin_token>", **challenge
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self._token
        ):
            return error(401, "invalid_token", "the admin token is not valid", **challenge)
        return None
