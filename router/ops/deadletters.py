"""Dead letters for people: read ``dest.<id>.dlq``, and redrive chosen letters once.

A letter (format in :mod:`router.delivery.records`) holds the event as the router had it for
the destination, the request, the response and the reason. Redriving a letter writes its
event back to ``dest.<id>`` (key: the user's partition key, headers ``source`` and
``router-redrive: <partition>:<offset>`` of the letter), so the destination's agent delivers
it like a fresh event: attempt 1, with a full retry window. It keeps its messageId, so a
partner that deduplicates on it (webhook: ``Idempotency-Key``) sees the same id.

Once the events of a redrive are acknowledged, a marker record is appended to the same
dead-letter topic: key ``router-redrive``, header ``router-redrive: 1``, value::

    {"v": 1, "kind": "redrive", "destination": "hook", "at": "2026-11-23T10:00:00.000Z",
     "to": "dest.hook", "letters": [[0, 41], [1, 7]]}    # [partition, offset] of each letter

A letter named by a marker has left the live view and is never redriven again. Markers live
beside the letters they name, so they are kept exactly as long as those letters. If the
process dies between the events and the marker, the letters stay live and a second redrive
sends them again (at least once; the messageId lets partners drop the duplicate).
Letters without an event (a record that was not a JSON event) are not redriven: there is
nothing a destination could take; they are reported and stay live.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from router import spec
from router.broker.clients import BatchSender, OutRecord
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.delivery.records import HEADER_SOURCE, iso
from router.ops.reading import Record, TopicReader, header
from router.ops.store import Batch, Letter, Store

REDRIVE_HEADER: Final = "router-redrive"
MARKER_KEY: Final = b"router-redrive"
#: Letters per produce round trip (and per marker record).
REDRIVE_CHUNK: Final = 500


def parse_dead_letter(destination: str, record: Record, batch: Batch) -> None:
    """Add what ``record`` (of ``destination``'s dead-letter topic) says to ``batch``."""
    body: Any
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        body = None
    if header(record, REDRIVE_HEADER) is not None:
        if isinstance(body, dict) and isinstance(body.get("letters"), list):
            at = spec.iso_seconds(body.get("at")) or record.timestamp / 1000
            batch.redrives.extend(
                (destination, int(item[0]), int(item[1]), at)
                for item in body["letters"]
                if isinstance(item, list) and len(item) == 2
            )
        return
    if not isinstance(body, dict):
        body = {"reason": "unreadable", "raw": (record.value or b"")[:1024].decode("latin-1")}
    event = body.get("event")
    event = event if isinstance(event, dict) else {}
    kind = event.get("type")
    name = event.get("event") if kind == "track" else event.get("name")
    response = body.get("response")
    status = response.get("status") if isinstance(response, dict) else None
    mid = body.get("messageId")
    source = body.get("sourceId")
    reason = body.get("reason")
    attempts = body.get("attempts")
    user = event.get("userId")
    batch.letters.append(
        Letter(
            destination=destination,
            partition=record.partition,
            offset=record.offset,
            message_id=mid if isinstance(mid, str) else None,
            source_id=source if isinstance(source, str) else None,
            reason=reason if isinstance(reason, str) else None,
            attempts=attempts if isinstance(attempts, int) else None,
            failed_at=spec.iso_seconds(body.get("failedAt")) or record.timestamp / 1000,
            status=status if isinstance(status, int) else None,
            event_type=kind if isinstance(kind, str) else None,
            event_name=name if isinstance(name, str) else None,
            body=record.value or b"{}",
            user_id=None if user is None else str(user),
        )
    )


def marker_record(
    topic: str, destination: str, to: str, letters: Sequence[tuple[int, int]], at: float
) -> OutRecord:
    value = {
        "v": 1,
        "kind": "redrive",
        "destination": destination,
        "at": iso(at),
        "to": to,
        "letters": [list(location) for location in letters],
    }
    return OutRecord(topic, MARKER_KEY, orjson.dumps(value), ((REDRIVE_HEADER, b"1"),))


@dataclass(slots=True)
class RedriveResult:
    destination: str
    selected: int = 0
    sent: int = 0
    #: (letter id, why) of letters that were not sent.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (partition, offset) of the letters sent (and marked redriven).
    locations: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "selected": self.selected,
            "redriven": self.sent,
            "skipped": [{"id": letter, "reason": why} for letter, why in self.skipped],
        }


async def redrive(
    sender: BatchSender,
    topics: Topics,
    destination: str,
    letters: Sequence[tuple[dict[str, Any], bytes]],
    *,
    progress: Callable[[int], None] | None = None,
) -> RedriveResult:
    """Send ``letters`` (summary, body) back to ``dest.<id>``, then mark them redriven."""
    result = RedriveResult(destination, selected=len(letters))
    target = topics.destination(destination)
    dlq = topics.dead_letter(destination)
    for start in range(0, len(letters), REDRIVE_CHUNK):
        chunk = letters[start : start + REDRIVE_CHUNK]
        records: list[OutRecord] = []
        sent: list[tuple[int, int]] = []
        for summary, body in chunk:
            letter_id = str(summary["id"])
            if not summary.get("live", True):
                result.skipped.append((letter_id, "already redriven"))
                continue
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
            event = parsed.get("event") if isinstance(parsed, dict) else None
            if not isinstance(event, dict):
                result.skipped.append((letter_id, "the letter holds no event (not JSON)"))
                continue
            headers: list[tuple[str, bytes]] = []
            source = parsed.get("sourceId")
            if isinstance(source, str):
                headers.append((HEADER_SOURCE, source.encode()))
            headers.append((REDRIVE_HEADER, letter_id.encode()))
            records.append(
                OutRecord(target, spec.partition_key(event), orjson.dumps(event), tuple(headers))
            )
            sent.append((int(summary["partition"]), int(summary["offset"])))
        if records:
            await sender.send(records)
            await sender.send([marker_record(dlq, destination, target, sent, time.time())])
            result.sent += len(records)
            result.locations.extend(sent)
        if progress is not None:
            progress(len(chunk))
    return result


async def load_dead_letters(
    kafka: KafkaSettings,
    topics: Topics,
    destination: str,
    *,
    progress: Callable[[int], None] | None = None,
    forgotten: AbstractSet[str] = frozenset(),
) -> Store:
    """A throwaway in-memory store holding ``destination``'s dead-letter topic, read to its
    end (for command-line tools; the console keeps its own store up to date). Letters of
    ``forgotten`` users (privacy deletion) are left out: never listed, never redriven."""
    store = Store(None, retention=float("inf"))
    await store.open()
    topic = topics.dead_letter(destination)
    async with TopicReader(kafka, role="dlq") as reader:
        partitions = await reader.partitions([topic])
        await reader.start_at(partitions, since_ms=None)
        async for records in reader.read_to_end():
            batch = Batch()
            for record in records:
                parse_dead_letter(destination, record, batch)
            if forgotten:
                batch.letters = [x for x in batch.letters if x.user_id not in forgotten]
            await store.call(store.fold, batch)
            if progress is not None:
                progress(len(records))
    return store
