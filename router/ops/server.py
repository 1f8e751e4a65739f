"""``/metrics``, ``/healthz`` (liveness) and ``/readyz`` for every role process.

``/readyz`` answers 200 only while every role of the process has started, none reports a
:meth:`~router.roles.Role.failure`, and the process is not stopping; otherwise 503 with the
reason (``starting``, ``stopping``, or the failed role and why).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from router.roles import Role, RoleBase

logger = logging.getLogger(__name__)


class OpsServer(RoleBase):
    name = "ops"

    def __init__(
        self,
        registry: CollectorRegistry,
        roles: Sequence[Role],
        *,
        host: str = "127.0.0.1",
        port: int = 9300,
    ) -> None:
        self.registry = registry
        self.roles = list(roles)
        self.host = host
        self.port = port
        #: Set by the host once every role started, cleared when it begins to stop.
        self.ready = False
        self.stopping = False
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        checks = {role.name: role.health() for role in self.roles}
        ok = all(healthy for healthy, _ in checks.values())
        body = {
            name: {"ok": healthy, "detail": detail} for name, (healthy, detail) in checks.items()
        }
        return web.json_response({"ok": ok, "roles": body}, status=200 if ok else 503)

    def readiness(self) -> tuple[bool, str]:
        """Whether the process should get work, and why not."""
        for role in self.roles:
            reason = role.failure()
            if reason:
                return False, f"{role.name} failed: {reason}"
        if self.stopping:
            return False, "stopping"
        if not self.ready:
            return False, "starting"
        return True, "ready"

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, detail = self.readiness()
        return web.json_response({"ready": ready, "detail": detail}, status=200 if ready else 503)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        logger.info(
            "ops endpoints on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def health(self) -> tuple[bool, str]:
        return True, "serving"
