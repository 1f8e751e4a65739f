"""Sending webhook requests and checking the endpoint is reachable."""

from __future__ import annotations

from destinations.base import DestinationError, PartnerRequest, PartnerResponse
from destinations.http import HttpClient
from destinations.webhook.config import WebhookSettings


class WebhookSender:
    def __init__(self, settings: WebhookSettings, http: HttpClient, *, timeout: float) -> None:
        self.settings = settings
        self.http = http
        self.timeout = timeout

    async def send(self, request: PartnerRequest) -> PartnerResponse:
        return await self.http.send(request, time_limit=self.timeout)

    async def health_check(self) -> tuple[bool, str]:
        """GET ``health_url`` (healthy below 500) or, without one, open a TCP connection."""
        if self.settings.health_url is None:
            return await self.http.probe(str(self.settings.url), time_limit=min(self.timeout, 5.0))
        url = str(self.settings.health_url)
        request = PartnerRequest(method="GET", url=url, headers=(), body=b"")
        try:
            response = await self.http.send(request, time_limit=min(self.timeout, 5.0))
        except DestinationError as exc:
            return False, exc.message
        if response.status >= 500:
            return False, f"health_url answered HTTP {response.status}"
        return True, f"health_url answered HTTP {response.status}"
