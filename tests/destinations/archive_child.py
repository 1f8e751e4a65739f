"""A process that archives one large batch, for tests that kill it mid-write.

    python -m tests.destinations.archive_child SETTINGS_JSON MEGABYTES

Writes ``MEGABYTES`` of hard-to-compress events through the archive plugin (the real write
path: encode, then send every file) and exits 0 when every file is stored.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from destinations.archive import ArchiveDestination
from destinations.base import Encoded, PluginContext
from destinations.http import HttpClient
from router.config import Destination


def events(megabytes: int) -> list[dict[str, object]]:
    blob_size = 64 * 1024
    count = megabytes * 1024 * 1024 // (2 * blob_size)
    return [
        {
            "type": "track",
            "event": "Big",
            "userId": "u",
            "messageId": f"big-{i}",
            "receivedAt": "2026-11-23T10:00:00.000Z",
            "properties": {"blob": os.urandom(blob_size).hex()},
        }
        for i in range(count)
    ]


async def main(settings: dict[str, object], megabytes: int) -> None:
    destination = Destination.model_validate(
        {
            "id": "archive",
            "name": "Archive",
            "type": "archive",
            "sources": ["web"],
            "settings": settings,
            "delivery": {"timeout": "60s"},
        }
    )
    plugin = ArchiveDestination(destination, PluginContext(http=HttpClient()))
    await plugin.start()
    try:
        encoded = plugin.encode(events(megabytes))
        assert isinstance(encoded, Encoded)
        for request in encoded.requests:
            await plugin.send(request)
    finally:
        await plugin.stop()


if __name__ == "__main__":
    asyncio.run(main(orjson.loads(sys.argv[1]), int(sys.argv[2])))
