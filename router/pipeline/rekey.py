"""Stage 2b: move records that sit outside their user's partition, before dedup.

Dedup keeps one store per partition number (:mod:`router.pipeline.dedup`), so every copy of an
event must be read from its user's partition: Kafka's default partitioning, murmur2 of the
user key (``userId``, else ``anonymousId``) modulo the partition count of ``events.raw``, which
is what the gateway, Java clients and aiokafka use. Records land elsewhere when a producer
sends no key (most clients' default: then records spread over partitions), keys by something
else, or hashes keys differently (librdkafka's default partitioner is CRC32-based).

Such a record is not processed where it is: it is written, unchanged, to the same partition
number of ``events.rekeyed`` as its user's partition, keyed by the user, and processed when it
is read from there. The copy carries what its processing needs from the original record:
``router-message-id`` (the messageId the decode stage gave the original, derived from that
record when the event had none, so a replay of the original is still recognised),
``router-origin`` (``partition:offset:timestamp`` of the original in ``events.raw``: DLQ records
point there, and ``receivedAt`` comes from its time), and the original headers and timestamp.

Readers of ``events.raw`` other than the router (replay tools, archives) must not count an
event twice: a record of ``events.raw`` outside its user's partition was moved, and the copy
that counts is the one on ``events.rekeyed`` whose ``router-origin`` names it. Re-writing
originals to ``events.raw`` is safe within the window for events that carry a messageId (dedup
drops those already delivered); one without gets a new id at its new offset, so replays should
send the messageId the event was delivered with.
"""

from __future__ import annotations

from collections.abc import Callable

from router.broker.clients import OutRecord
from router.pipeline.records import Envelope

MESSAGE_ID_HEADER = "router-message-id"
ORIGIN_HEADER = "router-origin"
_OWN_HEADERS = (MESSAGE_ID_HEADER, ORIGIN_HEADER)


def split(
    envelopes: list[Envelope],
    partitions: int,
    hashes: dict[bytes, int],
    hash_key: Callable[[bytes], int],
    target_topic: str,
) -> tuple[list[Envelope], list[OutRecord], dict[str, int]]:
    """Envelopes to process here, records to write to ``target_topic``, moves per source.

    ``hashes`` caches Kafka's murmur2 of keys (positive), ``hash_key(key)`` computes and
    caches one: the pipeline's cache, which the fan-out reads for the same users. This loop
    runs for every event of keyed input too, so it is written out inline.
    """
    kept: list[Envelope] = []
    moved: list[OutRecord] = []
    counts: dict[str, int] = {}
    keep = kept.append
    cached = hashes.get
    for env in envelopes:
        event = env.event
        user = event.get("userId") or event.get("anonymousId") or ""
        key = (user if type(user) is str else str(user)).encode()
        if not key:
            keep(env)
            continue
        hashed = cached(key)
        if hashed is None:
            hashed = hash_key(key)
        home = hashed % partitions
        if home == env.partition:
            keep(env)
            continue
        moved.append(_moved_record(env, key, home, target_topic))
        counts[env.source_id] = counts.get(env.source_id, 0) + 1
    return kept, moved, counts


def _moved_record(env: Envelope, key: bytes, partition: int, topic: str) -> OutRecord:
    origin = env.origin
    if origin is None:  # first move; a record moved again keeps where it came from first
        origin = (env.partition, env.offset, env.timestamp_ms)
    headers = (
        *(h for h in env.headers if h[0] not in _OWN_HEADERS),
        (MESSAGE_ID_HEADER, str(env.event["messageId"]).encode()),
        (ORIGIN_HEADER, b"%d:%d:%d" % origin),
    )
    return OutRecord(topic, key, env.raw, headers, partition, origin[2])


# Record timestamps a datetime can hold (up to the end of year 9999, in ms).
_MAX_TIMESTAMP_MS = 253_402_300_799_999


def parse_origin(value: bytes | None) -> tuple[int, int, int] | None:
    """``partition:offset:timestamp`` from a ``router-origin`` header; None if malformed.

    Anyone can write headers to events.raw: a value the router would not write is ignored.
    """
    if not isinstance(value, bytes):
        return None
    parts = value.split(b":")
    if len(parts) != 3:
        return None
    try:
        partition, offset, timestamp = (int(p) for p in parts)
    except ValueError:
        return None
    if min(partition, offset, timestamp) < 0 or timestamp > _MAX_TIMESTAMP_MS:
        return None
    return partition, offset, timestamp
