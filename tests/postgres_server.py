"""A real, throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks.

Debian's ``postgresql`` package (``scripts/test.sh`` installs it when missing): ``initdb``
into a temporary directory, ``postgres`` on a free port, password authentication over TCP
only (no Unix socket), durability switched off (a test cluster is thrown away). PostgreSQL
refuses to run as root, so as root the cluster runs as the ``postgres`` user the package
creates.

    with PostgresServer() as server:
        dsn = server.dsn("postgres")
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from router.broker.embedded import free_port

USER = "router"
PASSWORD = "router-test-password"  # of a throwaway cluster


def postgres_bin() -> Path:
    """Directory of ``initdb`` and ``postgres``: ``$POSTGRES_BIN``, else Debian's newest."""
    configured = os.environ.get("POSTGRES_BIN")
    if configured:
        return Path(configured)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: install Debian's postgresql package "
        "(bash scripts/test.sh does, as root) or set POSTGRES_BIN"
    )


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = USER
        self.password = PASSWORD
        self.directory: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}

    def start(self) -> None:
        binaries = postgres_bin()
        self.directory = tempfile.mkdtemp(prefix="router-pg-")
        data = os.path.join(self.directory, "data")
        password_file = os.path.join(self.directory, "password")
        Path(password_file).write_text(self.password)
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            os.chown(password_file, account.pw_uid, account.pw_gid)
            self._run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                data,
                "-U",
                self.user,
                "--pwfile",
                password_file,
                "--auth-host=scram-sha-256",
                "--auth-local=reject",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.directory,
            **self._run_as,
        )
        log = open(os.path.join(self.directory, "postgres.log"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(binaries / "postgres"),
                "-D",
                data,
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
            **self._run_as,
        )
        log.close()
        self._wait_ready(limit=30.0)

    def _wait_ready(self, *, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            # Ready once it accepts connections and the log says so (startup takes a moment).
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                if "ready to accept connections" in self.log():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"postgres not ready within {limit:.0f}s:\n{self.log()}")

    def log(self) -> str:
        if self.directory is None:
            return ""
        with contextlib.suppress(OSError):
            return Path(self.directory, "postgres.log").read_text(errors="replace")[-4000:]
        return ""

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
