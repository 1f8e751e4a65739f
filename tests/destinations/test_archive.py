"""The archive destination: layout, rolling, atomic writes and reading back, locally and on S3."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from destinations.archive import (
    ArchiveDestination,
    ArchiveFile,
    ArchiveReader,
    LocalStorage,
    S3Storage,
    open_storage,
)
from destinations.archive.config import S3Location
from destinations.archive.layout import MISSING, Manifest
from destinations.base import (
    ConnectionFailed,
    Encoded,
    EventBatch,
    PermanentError,
    PluginContext,
    RetryableError,
)
from destinations.http import HttpClient
from router.broker.topics import Topics
from router.config import Destination, KafkaSettings
from tests.delivery.helpers import (
    FAST_DELIVERY,
    make_workspace,
    produce_events,
    running_agent,
    unique_kafka,
)
from tests.destinations.outcomes import outcomes
from tests.destinations.s3_server import S3Server, s3_server

ROOT = Path(__file__).resolve().parents[2]


def make_plugin(
    settings: dict[str, Any], *, sources: list[str] | None = None, **delivery: Any
) -> ArchiveDestination:
    destination = Destination.model_validate(
        {
            "id": "archive",
            "name": "Archive",
            "type": "archive",
            "sources": sources or ["web"],
            "settings": settings,
            "delivery": {"timeout": "10s", **delivery},
        }
    )
    return ArchiveDestination(destination, PluginContext(http=HttpClient()))


def track(
    index: int, received: str | None = "2026-11-23T10:15:00.000Z", **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{index % 3}",
        "messageId": f"m-{index:04d}",
        "properties": {"index": index},
        **extra,
    }
    if received is not None:
        event["receivedAt"] = received
    return event


def files_of(plugin: ArchiveDestination, events: list[dict[str, Any]]) -> list[ArchiveFile]:
    encoded = plugin.encode(events)
    assert isinstance(encoded, Encoded) and not encoded.failed
    return list(encoded.requests)


async def write_all(plugin: ArchiveDestination, events: list[dict[str, Any]]) -> None:
    for request in files_of(plugin, events):
        written = await plugin.send(request)
        assert plugin.check(request, written) == {}


async def read_back(plugin: ArchiveDestination, prefix: str = "") -> list[dict[str, Any]]:
    reader = ArchiveReader(plugin.storage)
    return [event async for event in reader.events(prefix)]


def data_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith("_")
    )


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[ArchiveDestination]:
    plugin = make_plugin({"directory": str(tmp_path / "archive")})
    await plugin.start()
    try:
        yield plugin
    finally:
        await plugin.stop()


# ---------------------------------------------------------------- layout and rolling


def test_partitions_by_source_date_and_hour(tmp_path: Path) -> None:
    plugin = make_plugin({"directory": str(tmp_path)})
    events = [
        track(0, "2026-11-23T10:59:59.999Z"),
        track(1, "2026-11-23T11:00:00.000+00:00"),
        track(2, "2026-11-23T12:30:00.000+02:00"),  # 10:30 UTC
        track(3, None, timestamp="2026-11-24T00:00:01.000Z"),  # no receivedAt: timestamp
        track(4, None),  # neither
    ]
    files = files_of(plugin, events)
    assert [(f.partition, f.covers) for f in files] == [
        ("source=web/date=2026-11-23/hour=10", (0, 2)),
        ("source=web/date=2026-11-23/hour=11", (1,)),
        ("source=web/date=2026-11-24/hour=00", (3,)),
        (f"source=web/date={MISSING}/hour={MISSING}", (4,)),
    ]
    first = files[0]
    assert first.stem.startswith("20261123T103000000Z-")  # the earliest receivedAt in the file
    assert first.data_key == f"{first.partition}/{first.stem}.jsonl.gz"
    assert first.manifest_key == f"_manifests/{first.partition}/{first.stem}.json"
    assert first.first_received_at == "2026-11-23T10:30:00.000Z"
    assert first.last_received_at == "2026-11-23T10:59:59.999Z"
    assert files[3].stem.startswith("unknown-")
    # The same events in the same order make the same file (a replay replaces it) ...
    assert files_of(plugin, events) == files
    # ... and a different batch of the same hour makes another one.
    assert files_of(plugin, [events[2], events[0]])[0].stem != first.stem


def test_files_roll_by_size() -> None:
    plugin = make_plugin({"directory": "/unused", "max_file_bytes": 1024})
    events = [track(i) for i in range(12)]  # about 150 bytes of JSON each
    events[5]["properties"]["blob"] = "x" * 3000
    files = files_of(plugin, events)
    # Cut before the large event, which gets a file of its own; then 6 lines fit in 1 KiB.
    assert [f.covers for f in files] == [(0, 1, 2, 3, 4), (5,), (6, 7, 8, 9, 10, 11)]
    for file in files:
        lines = file.lines.splitlines()
        assert len(lines) == len(file.covers) == len(file.message_ids)
        assert len(file.lines) <= 1024 or len(lines) == 1
        assert [orjson.loads(line) for line in lines] == [events[i] for i in file.covers]


def test_files_roll_by_rows_and_age_through_the_lane_batch() -> None:
    plugin = make_plugin(
        {"directory": "/unused", "max_file_events": 250, "max_file_age": "5m"},
        batch_size=10,  # delivery options do not apply to archives
        flush_interval="1s",
    )
    assert plugin.batch_size == 250
    assert plugin.flush_interval == 300.0
    default = make_plugin({"directory": "/unused"})
    assert (default.batch_size, default.flush_interval) == (5000, 60.0)


def test_lines_are_the_bytes_read_from_kafka() -> None:
    plugin = make_plugin({"directory": "/unused"})
    events = [track(0), track(1)]
    raw = [json.dumps(events[0]).encode(), json.dumps(events[1], indent=2).encode()]
    [file] = files_of(plugin, EventBatch(events, raw))
    first, second = file.lines.split(b"\n")[:2]
    assert first == raw[0]  # spliced as read
    assert orjson.loads(second) == events[1]  # re-serialized: a JSON line spans one line


def test_each_event_lands_under_its_own_source() -> None:
    plugin = make_plugin({"directory": "/unused"}, sources=["web", "app"])
    events = [track(0), track(1), track(2)]
    raw = [orjson.dumps(e) for e in events]
    files = files_of(plugin, EventBatch(events, raw, ["app", "web", None]))
    by_source = {f.source: sorted(f.message_ids) for f in files}
    assert by_source == {
        "app": [events[0]["messageId"]],
        "web": sorted([events[1]["messageId"], events[2]["messageId"]]),  # None: the first
    }


# ---------------------------------------------------------------- local directory


async def test_local_round_trip(local: ArchiveDestination) -> None:
    events = [track(i, f"2026-11-23T{10 + i % 2}:0{i % 10}:00.000Z") for i in range(20)]
    await write_all(local, events)
    root = local.settings.directory
    assert root is not None
    names = data_files(root)
    assert len(names) == 2 and all(n.endswith(".jsonl.gz") for n in names)
    # Plain gzip JSON lines, readable by anything.
    plain = []
    for name in names:
        with gzip.open(root / name) as handle:
            plain += [orjson.loads(line) for line in handle]
    assert sorted(plain, key=lambda e: e["messageId"]) == events
    manifest = Manifest.from_json(
        (root / "_manifests" / names[0].replace(".jsonl.gz", ".json")).read_bytes()
    )
    assert manifest.file == names[0] and manifest.source == "web"
    assert manifest.events == 10 and manifest.size == (root / names[0]).stat().st_size
    assert manifest.message_ids == tuple(f"m-{i:04d}" for i in range(0, 20, 2))
    assert sorted(await read_back(local), key=lambda e: e["messageId"]) == events
    assert (await local.health_check())[0]


async def test_replayed_events_dropped_by_the_manifests(local: ArchiveDestination) -> None:
    events = [track(i) for i in range(15)]
    await write_all(local, events[:10])
    # A crash before the offsets were committed: the same batch written again replaces its
    # own file ...
    await write_all(local, events[:10])
    root = local.settings.directory
    assert root is not None
    assert len(data_files(root)) == 1
    # ... and the events replayed in another batch land in a second file of the same hour.
    await write_all(local, events[5:15])
    assert len(data_files(root)) == 2
    raw = []
    for name in data_files(root):
        with gzip.open(root / name) as handle:
            raw += [orjson.loads(line)["messageId"] for line in handle]
    assert len(raw) == 20  # m-0005..m-0009 are in both files
    reader = ArchiveReader(local.storage)
    read = [e async for e in reader.events("source=web/")]
    assert sorted(e["messageId"] for e in read) == [e["messageId"] for e in events]
    assert reader.duplicates == 5


async def test_data_without_manifest_is_not_read(local: ArchiveDestination) -> None:
    [complete] = files_of(local, [track(1)])
    await local.send(complete)
    [cut_short] = files_of(local, [track(2)])
    # A crash after the data file and before its manifest: its events were not acknowledged.
    await local.storage.write_gzip(cut_short.data_key, cut_short.lines, 6)
    reader = ArchiveReader(local.storage)
    assert [e["messageId"] async for e in reader.events()] == ["m-0001"]
    assert await reader.orphans() == [cut_short.data_key]


async def test_local_write_errors_are_retried(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    plugin = make_plugin({"directory": str(blocked)})
    await plugin.start()
    try:
        # A file where the partition directory must go: the write fails, nothing is stored.
        (blocked / "source=web").write_text("not a directory")
        [request] = files_of(plugin, [track(1)])
        with pytest.raises(RetryableError) as caught:
            await plugin.send(request)
        assert caught.value.reason == "io_enotdir"
        assert str(blocked) in caught.value.message
    finally:
        await plugin.stop()
    assert not (blocked / "_manifests").exists()


def _wait_for_part_file(root: Path, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = [p for p in (root / "_tmp").rglob("*.part") if p.stat().st_size > 0]
        if parts:
            return
        assert child.poll() is None, "the writer ended before it was caught mid-write"
        time.sleep(0.005)
    raise AssertionError("no file being written within 60s")


def _run_child(settings: dict[str, Any], megabytes: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.destinations.archive_child",
            orjson.dumps(settings).decode(),
            str(megabytes),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_crash_mid_write_leaves_no_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    settings = {"directory": str(root), "compression_level": 9}
    child = _run_child(settings, 48)
    try:
        await asyncio.to_thread(_wait_for_part_file, root, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert data_files(root) == []  # nothing a reader (or a query engine) would see
    assert not (root / "_manifests").exists()
    # The next writer on this directory clears what the dead one left in _tmp.
    successor = make_plugin(settings)
    await successor.start()
    try:
        leftovers = [p.name for p in (root / "_tmp").rglob("*.part")]
        assert leftovers == []
        assert [e async for e in ArchiveReader(successor.storage).events()] == []
    finally:
        await successor.stop()


# ---------------------------------------------------------------- S3-compatible storage


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
async def bucket(s3: S3Server) -> AsyncIterator[str]:
    name = f"archive-{uuid.uuid4().hex[:10]}"
    storage = S3Storage(S3Location.model_validate(s3.location(name)), timeout=10)
    await storage.start()
    try:
        await storage.client.create_bucket(Bucket=name)
        yield name
    finally:
        await storage.stop()


async def test_s3_round_trip_put_and_multipart(s3: S3Server, bucket: str) -> None:
    location = s3.location(bucket, "segment/", multipart_threshold=5 * 1024 * 1024)
    plugin = make_plugin({"s3": location})
    await plugin.start()
    try:
        small = [track(i) for i in range(5)]
        # Random hex compresses to about half: ~7 MiB of gzip goes up in two parts.
        large = [
            track(100 + i, "2026-11-23T11:00:00.000Z", properties={"blob": os.urandom(7000).hex()})
            for i in range(1000)
        ]
        await write_all(plugin, small + large)
        keys = await plugin.storage.list_keys("")
        assert len(keys) == 4
        assert sum(k.startswith("_manifests/source=web/date=2026-11-23/hour=1") for k in keys) == 2
        reader = ArchiveReader(plugin.storage)
        files = await reader.files()
        assert [f.manifest.events for f in files] == [5, 1000]
        assert files[1].manifest.size > 5 * 1024 * 1024  # it did take the multipart path
        read = [e async for e in reader.events()]
        assert read == small + large
        # What the objects are: plain gzip JSON lines under the prefix.
        raw = await plugin.storage.client.get_object(
            Bucket=bucket, Key=f"segment/{files[0].data_key}"
        )
        async with raw["Body"] as stream:
            body = await stream.read()
        assert [orjson.loads(line) for line in gzip.decompress(body).splitlines()] == small
        assert raw["ContentType"] == "application/gzip"
        assert (await plugin.health_check())[0]
    finally:
        await plugin.stop()


async def test_s3_errors_classified(s3: S3Server, bucket: str) -> None:
    missing = make_plugin({"s3": s3.location("no-such-bucket-here")})
    await missing.start()
    try:
        [request] = files_of(missing, [track(1)])
        with pytest.raises(PermanentError) as refused:
            await missing.send(request)
        assert refused.value.reason == "http_404" and "NoSuchBucket" in refused.value.message
        healthy, detail = await missing.health_check()
        assert not healthy and "404" in detail
    finally:
        await missing.stop()
    from router.broker.embedded import free_port

    down = make_plugin(
        {"s3": {**s3.location(bucket), "endpoint_url": f"http://127.0.0.1:{free_port()}"}}
    )
    await down.start()
    try:
        [request] = files_of(down, [track(1)])
        with pytest.raises(ConnectionFailed):
            await down.send(request)
    finally:
        await down.stop()


async def test_s3_crash_mid_upload_leaves_nothing_visible(s3: S3Server, bucket: str) -> None:
    location = s3.location(bucket, "crash/", multipart_threshold=5 * 1024 * 1024)
    child = _run_child({"s3": location}, 64)
    watcher = open_storage(make_plugin({"s3": location}).settings)
    await watcher.start()
    assert isinstance(watcher, S3Storage)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert child.poll() is None, "the upload ended before it was caught in the middle"
            assert time.monotonic() < deadline, "no multipart upload within 90s"
            uploads = (await watcher.client.list_multipart_uploads(Bucket=bucket)).get(
                "Uploads", []
            )
            if uploads:
                parts = await watcher.client.list_parts(
                    Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
                )
                if parts.get("Parts"):
                    break
            await asyncio.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    try:
        # Parts were uploaded, the upload was never completed: no object, no manifest.
        assert await watcher.list_keys("") == []
        uploads = (await watcher.client.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
        assert [u["Key"].startswith("crash/source=web/") for u in uploads] == [True]
    finally:
        await watcher.stop()


# ---------------------------------------------------------------- through a delivery agent


async def test_agent_archives_to_a_directory(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    root = tmp_path / "archive"
    workspace = make_workspace(
        kafka,
        [
            {
                "id": "archive",
                "name": "Archive",
                "type": "archive",
                "sources": ["web"],
                "settings": {"directory": str(root), "max_file_age": "300ms"},
                "delivery": FAST_DELIVERY,
            }
        ],
    )
    topics = Topics(kafka.topic_prefix)
    events = [track(i, f"2026-11-23T10:{i % 60:02d}:00.000Z") for i in range(30)]
    async with running_agent(workspace, ["archive"]):
        await produce_events(kafka, topics.destination("archive"), events)
        decided = await outcomes(kafka, topics.status, events=30)
    assert set(decided.values()) == {"delivered"}
    storage = LocalStorage(root)
    read = [e async for e in ArchiveReader(storage).events()]
    assert sorted(read, key=lambda e: e["messageId"]) == events


async def test_lane_rolls_files_by_the_archive_rows_and_age(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    root = tmp_path / "archive"
    workspace = make_workspace(
        kafka,
        [
            {
                "id": "archive",
                "name": "Archive",
                "type": "archive",
                "sources": ["web"],
                "settings": {"directory": str(root), "max_file_events": 4, "max_file_age": "2s"},
                "delivery": FAST_DELIVERY,
            }
        ],
    )
    topics = Topics(kafka.topic_prefix)
    reader = ArchiveReader(LocalStorage(root))
    async with running_agent(workspace, ["archive"]):
        # 10 events in three writes, each within the age of the previous one.
        for chunk in ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9]):
            await produce_events(kafka, topics.destination("archive"), [track(i) for i in chunk])
            await asyncio.sleep(0.3)
        decided = await outcomes(kafka, topics.status, events=10)
    assert set(decided.values()) == {"delivered"}
    sizes = sorted(f.manifest.events for f in await reader.files())
    assert sum(sizes) == 10
    # Full files of 4 by rows and the rest by age; how the 10 split depends on whether the
    # lane batches across the topic's 2 partitions (4+4+2) or per partition (4+1+4+1).
    assert max(sizes) == 4 and len(sizes) <= 4
