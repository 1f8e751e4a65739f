"""A fake Slack incoming webhook, from Slack's reference ("Sending messages using incoming
webhooks", "Handling errors").

``POST /services/<team>/<bot>/<token>`` with ``application/json`` ``{"text": ...}`` (plus
optional ``blocks``, ``username``, ``icon_emoji``, ``icon_url``, ``channel``). Answers
200 ``ok`` (text/plain); 400 ``invalid_payload`` (unparseable), 400 ``no_text``; 403
``invalid_token``; 404 ``no_service`` (unknown or revoked webhook); 410
``channel_is_archived``; 429 with ``Retry-After`` when posting more than about one message
a second (``rate_limit``, on demand here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakePartner


@dataclass
class FakeSlack(FakePartner):
    path: str = "/services/T000TEST/B000TEST/slack-token-000000"
    #: Answer this many posts with 429 (Retry-After: 1) before accepting again.
    rate_limit: int = 0
    archived: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/services/{tail:.*}", self._post)

    async def _post(self, request: web.Request) -> web.Response:
        call = await self.record(request)
        if call.path != self.path:
            return self.answer(call, 404, "no_service")
        if self.archived:
            return self.answer(call, 410, "channel_is_archived")
        if self.rate_limit > 0:
            self.rate_limit -= 1
            return self.answer(call, 429, "rate_limited", headers={"Retry-After": "1"})
        try:
            body = orjson.loads(call.body)
        except orjson.JSONDecodeError:
            return self.answer(call, 400, "invalid_payload")
        if not isinstance(body, dict):
            return self.answer(call, 400, "invalid_payload")
        if not (isinstance(body.get("text"), str) and body["text"].strip()) and not body.get(
            "blocks"
        ):
            return self.answer(call, 400, "no_text")
        self.messages.append(body)
        return self.answer(call, 200, "ok")
