"""Roles that end badly, hosted by the real faust worker (``router.app``) in a subprocess.

    python -m tests.hosted_roles {fails-later|cannot-start|slow-start} OPS_PORT STATE_DIR

``fails-later``: a healthy role and one whose loop "ends" one second after start (its
``failure()`` says why); its ``stop()`` takes two seconds, so a test can watch ``/readyz``
answer 503 while the process stops. ``cannot-start``: a role whose ``start()`` raises.
``slow-start``: a role whose ``start()`` takes three seconds (a SIGTERM arrives meanwhile).
These are plug-in roles written against the :class:`router.roles.Role` contract, the way a
new role would be: nothing of the router is replaced.
"""

from __future__ import annotations

import asyncio
import sys
import time

from prometheus_client import CollectorRegistry

from router import logs
from router.app import RoleHost, RouterWorker, build_app, faust_datadir
from router.ops.server import OpsServer
from router.roles import RoleBase


class Steady(RoleBase):
    name = "steady"

    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True
        print("steady stopped", file=sys.stderr, flush=True)

    def health(self) -> tuple[bool, str]:
        return True, "steady"


class EndsLater(RoleBase):
    name = "flaky"

    def __init__(self) -> None:
        self.started_at = 0.0

    async def start(self) -> None:
        self.started_at = time.monotonic()

    async def stop(self) -> None:
        await asyncio.sleep(2.0)

    def failure(self) -> str | None:
        if self.started_at and time.monotonic() - self.started_at > 1.0:
            return "its loop ended: ValueError('boom')"
        return None

    def health(self) -> tuple[bool, str]:
        return self.failure() is None, "flaky"


class SlowStart(RoleBase):
    name = "slow"

    def __init__(self) -> None:
        self.started = False

    async def start(self) -> None:
        await asyncio.sleep(3.0)
        self.started = True
        print("slow started", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        print(f"slow stopped after starting: {self.started}", file=sys.stderr, flush=True)

    def health(self) -> tuple[bool, str]:
        return True, "slow"


class CannotStart(RoleBase):
    name = "broken"

    async def start(self) -> None:
        raise ConnectionRefusedError("cannot reach what it needs at 127.0.0.1:1")

    async def stop(self) -> None:
        return None

    def health(self) -> tuple[bool, str]:
        return False, "never started"


def main(argv: list[str]) -> int:
    mode, port, state_dir = argv[0], int(argv[1]), argv[2]
    logs.configure("info", "text")
    other = {"fails-later": EndsLater, "cannot-start": CannotStart, "slow-start": SlowStart}[mode]
    roles: list[RoleBase] = [Steady(), other()]
    ops = OpsServer(CollectorRegistry(), roles, port=port)
    host = RoleHost([roles], ops=ops, grace=10.0)
    app = build_app("hosted-roles-test", None, datadir=faust_datadir(state_dir, "hosted"))
    worker = RouterWorker(app, host, shutdown_grace=10.0)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return worker.exit_code or int(exc.code or 0)
    return worker.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
