"""Generated hostile input through the gateway and straight onto ``events.raw``.

A gateway and a processor run in a process of their own (tests/fuzz/stack.py) on a broker of
their own; hypothesis sends 10,000 requests and writes 5,000 records, mixed with valid
neighbours. Every input must be accounted for: a 2xx (with how many events it accepted), a
4xx with ``code`` and ``message``, or, for what reached ``events.raw``, a routed record or a
dead letter with a reason. No 5xx, no crash of either role, no request without an answer,
the router's memory bounded, and every valid neighbour delivered to the destination topic.

Derandomized (the same inputs on every run) and bounded: about two minutes on two cores.
``pytest -m fuzz`` runs it alone, ``-m 'not fuzz'`` skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client.parser import text_string_to_metric_families

from router.broker.embedded import EmbeddedBroker
from router.broker.topics import Topics
from router.config import KafkaSettings
from tests.fuzz.strategies import (
    BATCH_PATHS,
    SINGLE_PATHS,
    WRITE_KEY,
    KafkaRecord,
    Request,
    kafka_records,
    requests,
)
from tests.kafka_helpers import consume

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
HTTP_INPUTS = 10_000
KAFKA_INPUTS = 5_000
# Growth of the router's RSS over its size once warmed up: every request and batch is bounded
# (500 KB bodies, gzip inflated to that at most, polls of 5,000 records of 64 KB at most).
MAX_RSS_GROWTH = 256 * 1024 * 1024
FUZZ_SETTINGS: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": list(HealthCheck),
}
INGEST = {*SINGLE_PATHS, *BATCH_PATHS}
# Request-level refusals: the whole body is unusable, so a valid neighbour inside it is too.
REQUEST_CODES = {
    "invalid_json",
    "invalid_body",
    "invalid_batch",
    "batch_too_large",
    "too_many_events",
    "invalid_gzip",
    "event_too_large",
    "missing_write_key",
    "invalid_write_key",
    "invalid_authorization",
    "unsupported_encoding",
    "not_found",
    "unknown_write_key",
    "method_not_allowed",
}


def workspace_data(kafka: KafkaSettings, state: Path) -> dict[str, Any]:
    hook = {"url": "http://127.0.0.1:9/unused"}
    return {
        "kafka": kafka.model_dump(),
        "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
        "tracking_plans": [{"id": "plan", "rules": {"track": {"Clicked": {"type": "object"}}}}],
        "sources": [
            {
                "id": "web",
                "write_keys": [WRITE_KEY],
                "middleware": [
                    {"type": "drop_fields", "fields": ["context.ip"]},
                    {"type": "add_context", "values": {"fuzz": True}},
                ],
                "tracking_plan": {"plan": "plan"},  # allows all, annotates violations
            }
        ],
        "destinations": [
            {"id": "sink", "name": "Sink", "type": "webhook", "settings": hook, "sources": ["web"]},
            {
                "id": "edited",
                "name": "Edited",
                "type": "webhook",
                "settings": hook,
                "sources": ["web"],
                "filters": [
                    {"type": "drop_properties", "fields": ["properties.blob"]},
                    {"type": "drop", "if": 'contains(properties.x, "y")'},
                ],
                "transformations": [{"type": "set_values", "values": {"properties.edited": True}}],
            },
        ],
    }


class Stack:
    """The router (tests/fuzz/stack.py) in a process of its own, and its metrics."""

    def __init__(self, kafka: KafkaSettings, state: Path) -> None:
        self.topics = Topics(kafka.topic_prefix)
        self.config = state / "workspace.json"
        self.config.write_text(json.dumps(workspace_data(kafka, state / "state")))
        self.process: subprocess.Popen[str] | None = None
        self.port = self.metrics_port = 0

    def __enter__(self) -> Stack:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.stack", str(self.config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ports = json.loads(self.process.stdout.readline() or "{}")
        assert ports, f"the router did not start (exit {self.process.poll()})"
        self.port, self.metrics_port = ports["gateway"], ports["metrics"]
        self.rss = psutil.Process(self.process.pid)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()

    def alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, "the router exited"

    def samples(self) -> list[Any]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def metric_sum(self, name: str, **match: str) -> float:
        return sum(
            s.value
            for s in self.samples()
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, int]:
        return {s.labels[label]: int(s.value) for s in self.samples() if s.name == name}


class Client:
    """Plain HTTP/1.1 with keep-alive; reconnects when the server closed the connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, request: Request, body: bytes) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.connection.request(
                    request.method, request.path, body=body, headers=request.headers
                )
                response = self.connection.getresponse()
                body = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.reconnect()
                return response.status, body
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                # The server closed a kept-alive connection before this request: resend.
                self.reconnect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()

    def reconnect(self) -> None:
        self.connection.close()
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


class Tally:
    """What the run saw, for the assertions at the end and the report."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.accepted = 0  # events written to events.raw by the gateway
        self.dead_lettered = 0  # batch items the gateway wrote to events.dlq
        self.neighbours: list[str] = []  # messageIds that must reach the destination
        self.rss_peak = 0

    def sample_rss(self, stack: Stack) -> int:
        rss: int = stack.rss.memory_info().rss
        self.rss_peak = max(self.rss_peak, rss)
        return rss


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """A broker for this suite alone: it writes more than the rest of the suite together."""
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


def neighbour(tally: Tally, tag: str) -> dict[str, Any]:
    message_id = f"fuzz-{tag}-{len(tally.neighbours)}"
    tally.neighbours.append(message_id)
    return {"type": "track", "userId": "neighbour", "event": "Clicked", "messageId": message_id}


def check_answer(
    request: Request,
    sent: tuple[bytes, int, int | None],
    answer_raw: tuple[int, bytes],
    tally: Tally,
    mid: str | None,
) -> None:
    """One answer: below 500, JSON, and what it says adds up; counted in ``tally``."""
    body, items, at = sent
    status, raw = answer_raw
    context = (status, raw[:300], request.method, request.path, body[:300])
    assert status < 500, context
    try:
        answer = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise AssertionError(context) from None
    if status >= 400:
        assert isinstance(answer, dict), context
        code, message = answer.get("code"), answer.get("message")
        assert isinstance(code, str) and code and isinstance(message, str) and message, context
        tally.outcomes[f"{status} {code}"] += 1
        if mid is not None:
            # A batch with a valid item is refused whole only for what spoils the whole body.
            assert code in REQUEST_CODES, context
            tally.neighbours.remove(mid)
        return
    assert 200 <= status < 300, context
    tally.outcomes[f"{status}"] += 1
    if request.method != "POST" or request.path == "/v1/m" or request.path not in INGEST:
        if mid is not None:
            tally.neighbours.remove(mid)
        return
    assert isinstance(answer, dict) and answer.get("success") is True, context
    if request.batch_head is None:
        tally.accepted += 1
        return
    rejected = answer.get("rejectedCount", 0)
    accepted = answer.get("accepted", items - rejected)
    assert accepted + rejected == items, context
    listed = answer.get("rejected", [])
    assert all(r["code"] and r["message"] for r in listed), context
    assert at not in {r["index"] for r in listed}, context
    tally.accepted += accepted
    tally.dead_lettered += rejected
    if mid is not None and request.routes_off:
        tally.neighbours.remove(mid)  # accepted, but the batch's integrations may say no


def send_single(client: Client, tally: Tally, tag: str) -> None:
    request = Request(
        "POST", "/v1/track", {"X-Write-Key": WRITE_KEY}, orjson.dumps(neighbour(tally, tag))
    )
    sent = request.materialize(None)
    check_answer(request, sent, client.send(request, sent[0]), tally, None)


def test_fuzz_http_and_kafka(broker: str, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=broker, topic_prefix="fuzz.", partitions=2)
    tally = Tally()
    count = Counter[str]()
    with Stack(kafka, tmp_path) as stack:
        client = Client(stack.port)
        send_single(client, tally, "warm")
        baseline = tally.sample_rss(stack)
        started = time.monotonic()

        @settings(max_examples=HTTP_INPUTS, phases=[Phase.generate, Phase.shrink], **FUZZ_SETTINGS)
        @given(request=requests())
        def fuzz_http(request: Request) -> None:
            mid: str | None = None
            item: bytes | None = None
            if request.batch_head is not None:
                item = orjson.dumps(neighbour(tally, "http"))
                mid = tally.neighbours[-1]
            sent = request.materialize(item)
            answer = client.send(request, sent[0])
            count["http"] += 1
            check_answer(request, sent, answer, tally, mid)
            if count["http"] % 25 == 0:  # a valid single event now and then, too
                send_single(client, tally, "single")
            if count["http"] % 100 == 0:
                tally.sample_rss(stack)
                stack.alive()

        try:
            fuzz_http()
        finally:
            client.close()
        http_seconds = time.monotonic() - started
        rss_after_http = tally.sample_rss(stack)

        records: list[KafkaRecord] = []

        @settings(max_examples=KAFKA_INPUTS, phases=[Phase.generate], **FUZZ_SETTINGS)
        @given(record=kafka_records())
        def fuzz_kafka(record: KafkaRecord) -> None:
            records.append(record)
            if len(records) % 10 == 0:
                value = orjson.dumps(neighbour(tally, "kafka"))
                records.append(
                    KafkaRecord(value, b"neighbour", [("write-key", WRITE_KEY.encode())], None)
                )

        fuzz_kafka()
        asyncio.run(produce_all(kafka, stack.topics.raw, records))

        expected = tally.accepted + len(records)
        deadline = time.monotonic() + 180
        while (received := stack.metric_sum("router_processor_received_total")) < expected:
            assert time.monotonic() < deadline, (received, expected)
            stack.alive()
            tally.sample_rss(stack)
            time.sleep(0.2)
        # Outcomes are counted when a batch is committed, with its received count.
        tally.sample_rss(stack)
        stack.alive()

        rejected = stack.metric_sum("router_processor_rejected_total")
        duplicates = stack.metric_sum("router_processor_duplicates_total")
        routed = stack.metric_sum("router_processor_routed_total", destination="sink")
        dropped = stack.metric_sum("router_processor_dropped_total", destination="sink")
        stage_drops = stack.metric_sum("router_processor_dropped_total", destination="all")
        reasons = stack.by_label("router_processor_rejected_total", "reason")
        # Every record that reached events.raw is routed, dropped on purpose, a duplicate or
        # a dead letter: nothing else happens to it.
        assert received == expected
        assert received == routed + dropped + stage_drops + duplicates + rejected, reasons

        topics = stack.topics
        delivered = asyncio.run(read(kafka, topics.destination("sink"), int(routed)))
        dead = asyncio.run(read(kafka, topics.dlq, int(rejected) + tally.dead_lettered))
    ids = {orjson.loads(r.value)["messageId"] for r in delivered}
    assert len(delivered) == routed
    missing = set(tally.neighbours) - ids
    assert not missing, sorted(missing)[:20]
    letters = [orjson.loads(r.value) for r in dead]
    assert len(letters) == rejected + tally.dead_lettered
    assert all(letter["reason"] and letter["message"] for letter in letters)
    assert tally.rss_peak - baseline < MAX_RSS_GROWTH, (baseline, tally.rss_peak)

    summary = {
        "http_requests": count["http"],
        "http_seconds": round(http_seconds),
        "http_outcomes": dict(sorted(tally.outcomes.items(), key=lambda kv: -kv[1])),
        "http_events_accepted": tally.accepted,
        "http_items_dead_lettered": tally.dead_lettered,
        "kafka_records": len(records),
        "processor": {
            "received": int(received),
            "routed_to_sink": int(routed),
            "dropped_for_sink": int(dropped),
            "duplicates": int(duplicates),
            "dead_lettered": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        },
        "neighbours_delivered": len(tally.neighbours),
        "router_rss_mb": {
            "baseline": baseline >> 20,
            "after_http": rss_after_http >> 20,
            "peak": tally.rss_peak >> 20,
        },
    }
    print("\nfuzz summary:", orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


async def produce_all(kafka: KafkaSettings, topic: str, records: list[KafkaRecord]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, r.value, key=r.key, headers=r.headers, timestamp_ms=r.timestamp_ms
            )
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


async def read(kafka: KafkaSettings, topic: str, expect: int) -> list[Any]:
    return await consume(kafka, topic, expect=expect, timeout=120, settle=1.0)
