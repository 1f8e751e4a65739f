"""The faust-streaming worker that hosts the router's roles in one process.

faust provides the worker lifecycle (start, signals, stop); the roles (processor, delivery
agents, gateway) own their Kafka clients and do the work. faust itself starts no Kafka
client, web server or sensor here (:class:`HostBoot`): its own consumer group cost about 3 s
at every start on the embedded broker, and after a crash its dead member held the next start
back for its whole session timeout. What it costs now is about 0.2 s.

:class:`RoleHost` is the one service the worker starts:

- start: the ops server first (``/readyz`` answers 503 ``starting`` meanwhile), then every
  role at once (each role's consumer-group join takes seconds and they are independent);
  ready when all have started. A role that cannot start is logged in one line and the
  process exits 1.
- run: every half second it asks each role for :meth:`~router.roles.Role.failure`; the
  first one reported is logged at error level in one line, ``/readyz`` answers 503, and the
  process stops and exits 1, so the orchestrator restarts it rather than leaving it half
  alive.
- stop (SIGTERM, SIGINT, or a failure): ``/readyz`` answers 503; with the embedded broker,
  :class:`router.drain.Drain` first finishes what its topics hold; then the roles stop, stage
  by stage (intake, then processing and delivery, then local sinks), each stage at once.

Shutdown is bounded by us, not by faust: a watchdog ends the process (exit 1) if a stop
takes longer than the grace period (faust-streaming has been seen hanging in ``stop()``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faust
import mode
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy
from mode.utils.futures import maybe_cancel

from router.drain import Backlog, Drain
from router.logs import one_line
from router.ops.server import OpsServer
from router.roles import Role

logger = logging.getLogger(__name__)
#: For mode's own narration of every service start and stop (quiet unless --debug).
MODE_LOGGER = logging.getLogger("mode.router")

#: Seconds between two checks of every role's ``failure()``.
WATCH_INTERVAL = 0.5
#: Share of the grace period the embedded drain may use; the rest is for stopping the roles.
DRAIN_SHARE = 0.7


class HostBoot(BootStrategy):
    """faust starts none of its own Kafka clients, web server or sensors: the roles own theirs."""

    enable_kafka = False
    enable_web = False
    enable_sensors = False


class RouterApp(faust.App):
    BootStrategy = HostBoot
    logger = MODE_LOGGER


def faust_broker_url(bootstrap_servers: str) -> str:
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    )


def build_app(app_id: str, bootstrap_servers: str | None, *, datadir: Path) -> faust.App:
    """The faust App of one process; ``datadir`` must exist (see :func:`faust_datadir`).

    faust never connects to the broker (:class:`HostBoot`); it is named for the record only.
    """
    return RouterApp(
        app_id,
        broker=faust_broker_url(bootstrap_servers or "localhost:9092"),
        store="memory://",
        web_enabled=False,
        datadir=str(datadir),
    )


def faust_datadir(state_dir: str, app_id: str) -> Path:
    """Where faust keeps its (here empty) data directory: ``$APP_DATADIR``, else the state dir.

    Created here, so a directory that cannot be written is reported before anything starts.
    """
    configured = os.environ.get("APP_DATADIR")
    path = Path(configured) if configured else Path(state_dir) / "faust" / app_id
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(f"faust's data directory {path} is not writable")
    return path


class RoleHost(mode.Service):
    """Starts, watches and stops the roles of one process; see the module docstring."""

    logger = MODE_LOGGER

    def __init__(
        self,
        stages: Sequence[Sequence[Role]],
        *,
        ops: OpsServer,
        drain: Drain | None = None,
        grace: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self.stages = [list(stage) for stage in stages if stage]
        self.roles = [role for stage in self.stages for role in stage]
        self.ops = ops
        self.drain = drain
        self.grace = grace
        #: Called with a reason when the process must stop and exit non-zero.
        self.on_fatal: Callable[[str], None] = lambda reason: None
        self.started_at = time.monotonic()
        self._starting: asyncio.Future[list[Any]] | None = None
        super().__init__(**kwargs)

    @property
    def label(self) -> str:
        return "roles"

    async def on_start(self) -> None:
        try:
            await self.ops.start()
        except OSError as exc:
            self._fatal(
                f"the ops server cannot listen on {self.ops.host}:{self.ops.port}: {one_line(exc)}"
            )
            return
        # A task of its own, shielded: a SIGTERM during start must not cancel a role half way
        # through its start (a consumer mid-join would be left open, never leaving its group);
        # on_stop lets the starts finish, then stops every role.
        self._starting = asyncio.ensure_future(
            asyncio.gather(*(role.start() for role in self.roles), return_exceptions=True)
        )
        results = await asyncio.shield(self._starting)
        failed = [
            (role, result)
            for role, result in zip(self.roles, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            for role, error in failed:
                logger.debug("%s could not start", role.name, exc_info=error)
            self._fatal(
                "; ".join(f"{role.name} could not start: {one_line(e)}" for role, e in failed)
            )
            return
        if self.ops.stopping:
            return  # SIGTERM came while starting: on_stop takes it from here
        self.ops.ready = True
        logger.info(
            "ready in %.1f s: %s",
            time.monotonic() - self.started_at,
            ", ".join(role.name for role in self.roles),
        )
        self.add_future(self._watch())

    def _fatal(self, reason: str) -> None:
        logger.error("%s; exiting", reason)
        self.on_fatal(reason)

    async def _watch(self) -> None:
        while not self.should_stop:
            for role in self.roles:
                reason = role.failure()
                if reason:
                    self._fatal(f"{role.name} failed: {reason}")
                    return
            await self.sleep(WATCH_INTERVAL)

    async def on_stop(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        self.ops.stopping = True
        starting = self._starting
        if starting is not None and not starting.done():
            logger.info("stopping while the roles start: letting them finish starting first")
            await asyncio.wait({starting}, timeout=max(1.0, self.grace * (1 - DRAIN_SHARE)))
        started = self._all_started()
        if self.drain is not None and started:
            await self.drain.run(began + self.grace * DRAIN_SHARE)
        for stage in reversed(self.stages):
            results = await asyncio.gather(*(role.stop() for role in stage), return_exceptions=True)
            for role, result in zip(stage, results, strict=True):
                if isinstance(result, Exception):
                    logger.error("%s did not stop cleanly: %s", role.name, one_line(result))
        if self.drain is not None and started:
            await self._count_left()
        await self.ops.stop()
        logger.info("stopped in %.1f s", loop.time() - began)

    def _all_started(self) -> bool:
        """Every role started (whether or not a stop came meanwhile)."""
        starting = self._starting
        if starting is None or not starting.done() or starting.cancelled():
            return False
        return not any(isinstance(result, BaseException) for result in starting.result())

    async def _count_left(self) -> None:
        assert self.drain is not None
        left: Backlog | None = None
        try:
            async with asyncio.timeout(5.0):
                left = await self.drain.backlog()
        except (KafkaError, TimeoutError) as exc:
            logger.warning("could not count what the embedded broker still holds: %r", exc)
            return
        if left.total:
            logger.warning(
                "the embedded broker stops with %d event(s) left undelivered, lost with its "
                "memory: %s",
                left.total,
                left.describe(),
            )
        else:
            logger.info(
                "embedded broker drained: every accepted event was delivered or dead-lettered"
            )


class RouterWorker(faust.Worker):
    """faust's worker hosting one :class:`RoleHost`, with a hard bound on shutdown time.

    ``exit_code`` is 1 after a role failed (or could not start), else 0.
    """

    logger = MODE_LOGGER

    def __init__(
        self,
        app: faust.App,
        host: RoleHost,
        *,
        shutdown_grace: float = 30.0,
        loglevel: str = "info",
    ) -> None:
        super().__init__(
            app,
            host,
            loglevel=loglevel,
            redirect_stdouts=False,
            quiet=True,
            # Logging is configured once by the CLI (router.logs): mode's own setup would add
            # a second format, colours and a spinner that writes terminal escape codes.
            override_logging=False,
        )
        self.spinner = None
        self.host = host
        self.shutdown_grace = shutdown_grace
        self.exit_code = 0
        self._watchdog: threading.Timer | None = None
        host.on_fatal = self.fail

    def fail(self, reason: str) -> None:
        """Stop the process because of ``reason``; it exits 1."""
        self.exit_code = 1
        if self._signal_stop_future is None:
            self._arm_watchdog()
            self._signal_stop_time = self.loop.time()
            self._signal_stop_future = asyncio.ensure_future(self._stop_now(), loop=self.loop)

    async def _stop_now(self) -> None:
        await self.stop()
        maybe_cancel(self._starting_fut)

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            return

        def expire() -> None:
            logger.error("shutdown took longer than %.0f s; exiting now", self.shutdown_grace)
            logging.shutdown()
            os._exit(1)

        self._watchdog = threading.Timer(self.shutdown_grace, expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _on_sigterm(self) -> None:
        logger.info("SIGTERM: stopping (grace %.0f s)", self.shutdown_grace)
        self._arm_watchdog()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        logger.info("SIGINT: stopping (grace %.0f s)", self.shutdown_grace)
        self._arm_watchdog()
        super()._on_sigint()

    async def _sentinel_task(self) -> None:
        # mode sleeps a whole second here before closing the loop; nothing needs it.
        await asyncio.sleep(0)
