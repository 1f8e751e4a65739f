"""What every long-running role (processor, delivery agent, gateway, ops) looks like.

Roles are plain async objects so tests drive them without a faust worker; ``router.app``
hosts them inside the faust-streaming worker (lifecycle, signals) for the CLI.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Role(Protocol):
    name: str

    async def start(self) -> None:
        """Connect, create what is missing, begin work in background tasks; return promptly."""

    async def stop(self) -> None:
        """Stop taking work, finish or hand off in-flight work, commit, release; bounded in time."""

    def health(self) -> tuple[bool, str]:
        """Liveness: False when the role stopped making progress (not merely when it is idle)."""

    def failure(self) -> str | None:
        """Why the role stopped working for good (its loop ended unexpectedly), else None.

        The process hosting the role reports this at once, answers ``/readyz`` with 503 and
        exits non-zero, so the orchestrator restarts it rather than leaving it half alive.
        """


class RoleBase:
    """Async context manager plumbing for roles: ``async with Role(...) as role``."""

    name = "role"

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def failure(self) -> str | None:
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
