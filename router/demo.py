"""``router run --demo``: a local sink that prints what it receives, and a trickle of events.

Only for seeing events flow on a laptop; never part of a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys

import orjson
from aiohttp import web

from router import spec
from router.broker.clients import BatchSender, OutRecord, make_producer
from router.broker.topics import topics_for
from router.config import Workspace
from router.roles import RoleBase

logger = logging.getLogger(__name__)

DEMO_SINK_PORT = 9400


class DemoSink(RoleBase):
    """Answers 200 to every POST on 127.0.0.1:9400 and prints each event it got."""

    name = "demo-sink"

    def __init__(self, port: int = DEMO_SINK_PORT, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.received = 0
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        events = body if isinstance(body, list) else body.get("batch", [body])
        for event in events:
            self.received += 1
            print(
                f"[demo sink {request.path}] {event.get('type')} "
                f"{event.get('event') or event.get('name') or ''} user={event.get('userId')} "
                f"messageId={event.get('messageId')}",
                file=sys.stdout,
                flush=True,
            )
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        logger.info("demo sink printing deliveries to http://%s:%d/", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def health(self) -> tuple[bool, str]:
        return True, f"{self.received} received"


class DemoTraffic(RoleBase):
    """Writes a test track event to events.raw every ``interval`` seconds."""

    name = "demo-traffic"

    def __init__(self, workspace: Workspace, write_key: str, interval: float = 3.0) -> None:
        self.workspace = workspace
        self.write_key = write_key
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        producer = make_producer(self.workspace.kafka, role="demo")
        await producer.start()
        sender = BatchSender(producer)
        topic = topics_for(self.workspace.kafka).raw
        try:
            for n in itertools.count(1):
                event = spec.stamp(
                    {
                        "type": "track",
                        "event": "Order Completed" if n % 2 else "Product Viewed",
                        "userId": f"demo-user-{n % 3}",
                        "properties": {"total": n * 10, "email": f"user{n}@example.com"},
                    },
                    spec.now(),
                )
                record = OutRecord(
                    topic,
                    spec.partition_key(event),
                    orjson.dumps(event),
                    (("write-key", self.write_key.encode()),),
                )
                await sender.send([record])
                logger.info("demo: sent %s %s", event["event"], event["messageId"])
                await asyncio.sleep(self.interval)
        finally:
            await producer.stop()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="demo-traffic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def health(self) -> tuple[bool, str]:
        return True, "sending"
