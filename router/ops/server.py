"""``/metrics``, ``/healthz`` (liveness) and ``/readyz`` for every role process; in a process
that runs the console (``router ops``, ``router run``) also its API (``/api/v1/``, admin
token required) and its page (``/``).

``/readyz`` answers 200 only while every role of the process has started, none reports a
:meth:`~router.roles.Role.failure`, and the process is not stopping; otherwise 503 with the
reason (``starting``, ``stopping``, or the failed role and why).

The page is static (HTML, one script, one stylesheet, no build step); everything it shows
comes from the API with the token the user typed, so the page itself holds no data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from router.config import OpsSettings
from router.ops.auth import TokenCheck
from router.roles import Role, RoleBase

if TYPE_CHECKING:
    from router.ops.api import ConsoleApi
    from router.ops.console import Console

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: What the page may load and talk to: itself only (payloads are shown as text, and a
#: script that slipped in anyway could not send them anywhere).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class OpsServer(RoleBase):
    name = "ops"

    def __init__(
        self,
        registry: CollectorRegistry,
        roles: Sequence[Role],
        *,
        host: str = "127.0.0.1",
        port: int = 9300,
        console: Console | None = None,
        settings: OpsSettings | None = None,
    ) -> None:
        self.registry = registry
        self.roles = list(roles)
        self.host = host
        self.port = port
        #: Set by the host once every role started, cleared when it begins to stop.
        self.ready = False
        self.stopping = False
        self.console = console
        self.settings = settings or (console.settings if console else OpsSettings())
        self._runner: web.AppRunner | None = None
        self.api: ConsoleApi | None = None
        self.tokens = TokenCheck(self.settings)
        middlewares = []
        if console is not None:
            from router.ops.api import ConsoleApi

            self.api = ConsoleApi(console, self.tokens)
            middlewares.append(self.api.middleware)
        self.app = web.Application(middlewares=middlewares)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        if self.api is not None:
            self.api.install(self.app)
            self.app.router.add_get("/", self._page)
            self.app.router.add_get("/static/{name}", self._static)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.settings.protect_metrics:
            refusal = self.tokens.refusal(request)
            if refusal is not None:
                return refusal
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

    async def _page(self, _request: web.Request) -> web.Response:
        body = (STATIC / "index.html").read_bytes()
        return web.Response(body=body, content_type="text/html", headers=PAGE_HEADERS)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = STATIC / name
        kind = _STATIC_TYPES.get(path.suffix)
        # Only plain file names of known kinds: never a path out of the folder.
        if kind is None or "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=kind, headers=PAGE_HEADERS)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        paths = "/metrics /healthz /readyz" + (" /api/v1 and the console at /" if self.api else "")
        logger.info("ops endpoints on http://%s:%d (%s)", self.host, self.port, paths)

    async def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def health(self) -> tuple[bool, str]:
        return True, "serving"
