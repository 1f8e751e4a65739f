"""A recording HTTP sink for the benchmarks, run in its own process: ``python -m bench.sink``.

    python -m bench.sink --port N

Every path answers 200 by default. Per path it counts requests and events (a body
``{"batch": [...]}`` holds several, any other JSON object is one) and the arrival times of the
first and last request; for events carrying ``context.benchNs`` (the writer's
``time.time_ns()``), it records ``arrival - benchNs`` in microseconds.

Control (JSON): ``POST /_control {"/path": {"delay": 2.0, "status": 503}}`` sets how a path
answers (``{}`` restores it); ``GET /_stats`` returns ``{path: {requests, events, first_ns,
last_ns, latencies_us: [...]}}``; ``POST /_reset`` clears the counters. ``GET /_ping`` is
the readiness check. It prints ``ready`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

#: Latencies kept per path at most (a bounded sink; the bench writes far fewer).
MAX_SAMPLES = 2_000_000


@dataclass
class PathStats:
    requests: int = 0
    events: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies_us: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latencies_us": self.latencies_us,
        }


class Sink:
    def __init__(self) -> None:
        self.stats: dict[str, PathStats] = {}
        self.behaviour: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_"):
            return await self.control(request, path)
        body = await request.read()
        arrived = time.time_ns()
        stats = self.stats.get(path)
        if stats is None:
            stats = self.stats[path] = PathStats()
        stats.requests += 1
        if not stats.first_ns:
            stats.first_ns = arrived
        stats.last_ns = arrived
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = None
        events = decoded.get("batch") if isinstance(decoded, dict) else None
        if not isinstance(events, list):
            events = [decoded] if isinstance(decoded, dict) else []
        stats.events += len(events)
        samples = stats.latencies_us
        for event in events:
            context = event.get("context") if isinstance(event, dict) else None
            written = context.get("benchNs") if isinstance(context, dict) else None
            if isinstance(written, int) and len(samples) < MAX_SAMPLES:
                samples.append((arrived - written) // 1000)
        behaviour = self.behaviour.get(path)
        if behaviour:
            delay = behaviour.get("delay")
            if delay:
                await asyncio.sleep(float(delay))
            return web.Response(status=int(behaviour.get("status", 200)))
        return web.Response(status=200)

    async def control(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        if path == "/_ping":
            return web.Response(text="ok")
        if path == "/_stats":
            body = {name: stats.as_dict() for name, stats in self.stats.items()}
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        if path == "/_reset":
            self.stats.clear()
            return web.Response(text="ok")
        if path == "/_control":
            changes = orjson.loads(await request.read())
            for name, behaviour in changes.items():
                if behaviour:
                    self.behaviour[name] = behaviour
                else:
                    self.behaviour.pop(name, None)
            return web.Response(text="ok")
        return web.Response(status=404)


async def serve(port: int) -> None:
    sink = Sink()
    server = web.Server(sink.handle, access_log=None)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
