"""The faust-streaming worker that hosts the router's roles in one process.

faust provides the App, the worker lifecycle (start, signals, stop) and, for low-volume side
streams, agents and timers. The hot paths (processor, delivery) are roles that own their
aiokafka clients and are started as runtime services of the app. Shutdown is bounded by us,
not by faust: a watchdog ends the process if a clean stop takes longer than the grace period
(faust-streaming has been seen hanging in ``stop()``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import faust
import mode

from router.config import SECRETS, KafkaSettings
from router.ops.server import OpsServer
from router.roles import Role

logger = logging.getLogger(__name__)


class RoleService(mode.Service):
    """Adapts a plain async role to a mode Service, so the app starts and stops it."""

    def __init__(self, role: Role, **kwargs: Any) -> None:
        self.role = role
        super().__init__(**kwargs)

    @property
    def label(self) -> str:
        return f"role:{self.role.name}"

    async def on_start(self) -> None:
        await self.role.start()

    async def on_stop(self) -> None:
        await self.role.stop()


def faust_broker_url(bootstrap_servers: str) -> str:
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    )


def build_app(
    app_id: str,
    kafka: KafkaSettings,
    roles: Sequence[Role],
    *,
    ops: OpsServer | None = None,
) -> faust.App:
    """A faust App whose worker starts ``roles`` in order (and ``ops`` last, then marks ready)."""
    assert kafka.bootstrap_servers, "bootstrap servers must be resolved before the app is built"
    app = faust.App(
        app_id,
        broker=faust_broker_url(kafka.bootstrap_servers),
        store="memory://",
        web_enabled=False,
        # faust's own group only holds its leader topic; a short rebalance timeout keeps a
        # worker's first join at ~3 s instead of 30 s (design.md).
        broker_rebalance_timeout=3.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        topic_partitions=1,
        topic_replication_factor=kafka.replication_factor,
        producer_acks=-1,
    )

    async def start_roles() -> None:
        for role in roles:
            await app.add_runtime_dependency(RoleService(role, loop=app.loop, beacon=app.beacon))
        if ops is not None:
            await app.add_runtime_dependency(RoleService(ops, loop=app.loop, beacon=app.beacon))
            ops.ready = True
        logger.info("ready: %s", ", ".join(role.name for role in roles))

    app.task(start_roles)

    return app


class RouterWorker(faust.Worker):
    """faust's worker with a hard bound on shutdown time."""

    def __init__(
        self, app: faust.App, *, shutdown_grace: float = 30.0, loglevel: str = "info"
    ) -> None:
        super().__init__(
            app, loglevel=loglevel, redirect_stdouts=False, quiet=True, logging_config=None
        )
        self.shutdown_grace = shutdown_grace
        self._watchdog: threading.Timer | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        SECRETS.install()
        if level > logging.DEBUG:
            # faust/mode log every service start and stop at INFO; the roles say what matters.
            for name in ("faust", "mode", "aiokafka"):
                logging.getLogger(name).setLevel(logging.WARNING)

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            return

        def expire() -> None:
            logger.error("shutdown took longer than %.0fs; exiting now", self.shutdown_grace)
            logging.shutdown()
            os._exit(1)

        self._watchdog = threading.Timer(self.shutdown_grace, expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _on_sigterm(self) -> None:
        self._arm_watchdog()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_watchdog()
        super()._on_sigint()
