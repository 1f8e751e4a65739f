"""The router under fuzz: a gateway and a processor in a process of their own.

``python -m tests.fuzz.stack WORKSPACE.json`` prints one JSON line with the gateway's and the
metrics' ports, then serves until SIGTERM. Its own process, so the suite measures the router's
memory and not the fuzzer's (hypothesis keeps hundreds of MB of its own). If the processor
stops for good it says why on stderr and exits with 3.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from router.gateway import Gateway
from router.processor import Processor
from router.workspace import validate_workspace


async def serve(data: dict[str, object]) -> int:
    workspace = validate_workspace(data)
    registry = CollectorRegistry()
    metrics, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        Processor(workspace, registry) as processor,
        Gateway(workspace, CollectorRegistry(), port=0) as gateway,
    ):
        ports = {"gateway": gateway.port, "metrics": metrics.server_port}
        print(json.dumps(ports), flush=True)
        while not stop.is_set():
            if (failure := processor.failure()) is not None:
                print(f"processor failed: {failure}", file=sys.stderr, flush=True)
                return 3
            await asyncio.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(json.loads(Path(sys.argv[1]).read_text()))))
