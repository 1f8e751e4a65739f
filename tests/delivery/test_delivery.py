"""Delivery agents against the embedded broker and fake partners (tests/delivery/sink.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from router.broker.topics import topics_for
from router.config import KafkaSettings
from tests.delivery import plugins  # noqa: F401 - registers the "test-picky" type
from tests.delivery.helpers import (
    committed_offsets,
    destination,
    end_offsets,
    event,
    make_workspace,
    open_sinks,
    produce_events,
    running_agent,
    samples,
    scrape,
    value,
    wait_until,
)
from tests.delivery.sink import Decision, Sink
from tests.kafka_helpers import consume, produce, values

pytestmark = pytest.mark.integration

SECRET = "hmac-secret-for-tests"
TOKEN = "Bearer tok-never-shown-123"


async def test_delivers_every_event_signed_and_commits(kafka_ns: KafkaSettings, sink: Sink) -> None:
    topics = topics_for(kafka_ns)
    settings = {"secret": SECRET, "headers": {"Authorization": TOKEN}}
    ws = make_workspace(kafka_ns, [destination("hook", sink.url, settings=settings)])
    produced = [event(i) for i in range(30)]
    async with running_agent(ws, ["hook"]) as (agent, _ops):
        await produce_events(kafka_ns, topics.destination("hook"), produced)
        await wait_until(lambda: len(sink.unique_delivered) == 30, timeout=20, what="30 delivered")
        ends = await end_offsets(kafka_ns, topics.destination("hook"))
        group = agent.lanes["hook"].group_id

        async def all_committed() -> bool:
            return await committed_offsets(kafka_ns, group, topics.destination("hook")) == ends

        for _ in range(50):
            if await all_committed():
                break
            await asyncio.sleep(0.1)
        assert await all_committed()
        assert agent.health()[0]
    assert sink.duplicates == 0
    for request in sink.requests:
        [message_id] = request.message_ids
        assert request.headers["Idempotency-Key"] == message_id
        assert request.headers["Authorization"] == TOKEN
        digest = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Signature"] == f"sha256={digest}"
        assert orjson.loads(request.body)["messageId"] == message_id
    # One status record per request (unbatched: per event), each naming its events.
    statuses = values(await consume(kafka_ns, topics.status, expect=30, settle=0.3))
    covered = [m for s in statuses for m in s["messageIds"]]
    assert sorted(covered) == sorted(e["messageId"] for e in produced)
    assert {(s["outcome"], s["destination"], s["status"], s["count"]) for s in statuses} == {
        ("delivered", "hook", 200, 1)
    }
    assert all(s["latencyMs"][0] is not None and s["latencyMs"][0] >= 0 for s in statuses)


async def test_batches_split_around_events_that_cannot_be_encoded(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    topics = topics_for(kafka_ns)
    dest = destination("picky", sink.url, batch_size=5, rate_limit=10)
    dest["type"] = "test-picky"
    ws = make_workspace(kafka_ns, [dest])
    produced = [event(i, behavior="unencodable" if i in (3, 17) else "ok") for i in range(23)]
    async with running_agent(ws, ["picky"]):
        await produce_events(kafka_ns, topics.destination("picky"), produced)
        await produce(
            kafka_ns,
            topics.destination("picky"),
            [b"{not json"],
            key=b"u",
            headers=[("source", b"web")],
        )
        await wait_until(lambda: len(sink.unique_delivered) == 21, timeout=20, what="21 delivered")
        dead = values(await consume(kafka_ns, topics.dead_letter("picky"), expect=3, settle=0.3))
    assert all(set(orjson.loads(r.body)) == {"batch"} for r in sink.requests)
    assert max(len(r.events) for r in sink.requests) > 1
    assert sorted((d["reason"], d["messageId"]) for d in dead) == [
        ("encode", "m-17"),
        ("encode", "m-3"),
        ("undecodable", None),
    ]
    undecodable = next(d for d in dead if d["reason"] == "undecodable")
    assert undecodable["raw"] == "{not json" and undecodable["event"] is None
    assert sink.unique_delivered.isdisjoint({"m-3", "m-17"})
    # rate_limit 10/s: n requests span at least (n - 1) / 10 s. (Exact spacing is checked
    # with a fake clock in test_parts; arrival times at the sink jitter by a few ms.)
    starts = sorted(r.at for r in sink.requests)
    assert starts[-1] - starts[0] >= 0.9 * (len(starts) - 1) / 10


def first_attempt_429(events: list[dict[str, Any]], partner: Sink) -> Decision | None:
    """429 with Retry-After: 1 on the first attempt of each message, then accept."""
    if any(partner.attempts[str(e["messageId"])] == 1 for e in events):
        return 429, {"Retry-After": "1"}
    return 200, {}


async def test_every_failure_mode_ends_delivered_or_dead_lettered(kafka_ns: KafkaSettings) -> None:
    """One agent, one lane per failure mode; each partner recovers except the 400 one."""
    topics = topics_for(kafka_ns)
    n = 8
    names = ["d400", "d503", "d429", "dtimeout", "drefuse", "d408", "dwindow"]
    async with open_sinks(len(names)) as partners:
        sinks = dict(zip(names, partners, strict=True))
        sinks["d400"].fail(400)
        sinks["d503"].fail(503)
        sinks["d429"].script = first_attempt_429
        sinks["dtimeout"].slow(2.0)
        await sinks["drefuse"].refuse()
        sinks["d408"].fail(408)
        sinks["dwindow"].fail(503)
        dests = [destination(name, sinks[name].url) for name in names]
        dests[0]["settings"].update(secret=SECRET, headers={"Authorization": TOKEN})
        dests[names.index("dtimeout")]["delivery"]["timeout"] = "300ms"
        dests[names.index("dwindow")]["delivery"].update(
            retry_window="400ms", backoff_min="50ms", backoff_max="100ms"
        )
        ws = make_workspace(kafka_ns, dests)
        produced = {name: [event(i, prefix=name) for i in range(n)] for name in names}
        async with running_agent(ws, names) as (agent, ops):
            for name in names:
                await produce_events(kafka_ns, topics.destination(name), produced[name])

            async def metrics() -> dict[Any, float]:
                return samples(await scrape(ops.port))

            # Failing partners: every event retried at least twice (retries cycle through the
            # retry topic while the lane keeps going); the 400 and window ones dead-lettered.
            failing = {
                "d503": "http_503",
                "dtimeout": "timeout",
                "drefuse": "connection",
                "d408": "http_408",
            }
            for _ in range(200):
                parsed = await metrics()
                if all(
                    value(parsed, "router_delivery_retries_total", destination=d, reason=r) >= 2 * n
                    for d, r in failing.items()
                ) and all(
                    value(parsed, "router_delivery_dlq_total", destination=d) == n
                    for d in ("d400", "dwindow")
                ):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"retries not visible in metrics: {await scrape(ops.port)}")
            for name in failing:
                assert not sinks[name].unique_delivered
            # Recovery: retried events arrive.
            sinks["d503"].ok()
            sinks["dtimeout"].ok()
            sinks["d408"].ok()
            await sinks["drefuse"].accept()
            await wait_until(
                lambda: all(len(sinks[d].unique_delivered) == n for d in [*failing, "d429"]),
                timeout=20,
                what="every recovered partner got all its events",
            )
            await wait_until(
                lambda: all(lane.in_flight == 0 for lane in agent.lanes.values()), timeout=10
            )
            parsed = await metrics()
            dead = await asyncio.gather(
                *(consume(kafka_ns, topics.dead_letter(name), settle=0.5) for name in names)
            )
            statuses = await consume(kafka_ns, topics.status, settle=0.5)
    # Credentials never reach what people read: dead letters and status records.
    for record in [*dead[0], *statuses]:
        assert SECRET.encode() not in record.value and b"tok-never-shown" not in record.value
    dead_by_name = {name: values(records) for name, records in zip(names, dead, strict=True)}

    for name in names:
        ids = {e["messageId"] for e in produced[name]}
        delivered = sinks[name].unique_delivered
        dead_ids = {d["messageId"] for d in dead_by_name[name]}
        # Exactly one end per event: delivered or dead-lettered, never both, never neither.
        assert delivered | dead_ids == ids, name
        assert not delivered & dead_ids, name
        assert len(dead_by_name[name]) == len(dead_ids), name
        fresh = value(parsed, "router_delivery_received_total", destination=name, origin="fresh")
        retried = value(parsed, "router_delivery_received_total", destination=name, origin="retry")
        delivered_total = value(parsed, "router_delivery_delivered_total", destination=name)
        retries = sum(
            v
            for (metric, labels), v in parsed.items()
            if metric == "router_delivery_retries_total" and ("destination", name) in labels
        )
        failed = sum(
            v
            for (metric, labels), v in parsed.items()
            if metric == "router_delivery_failed_total" and ("destination", name) in labels
        )
        assert fresh == n, name
        assert delivered_total == len(delivered), name
        # Accounting identity: every record taken reached exactly one outcome.
        assert fresh + retried == delivered_total + retries + failed, name
        assert value(parsed, "router_delivery_in_flight_events", destination=name) == 0

    assert value(parsed, "router_delivery_failed_total", destination="d400", reason="http_400") == n
    assert (
        value(parsed, "router_delivery_retries_total", destination="d429", reason="http_429") == n
    )
    assert (
        value(
            parsed,
            "router_delivery_failed_total",
            destination="dwindow",
            reason="retries_exhausted",
        )
        == n
    )
    for letter in dead_by_name["d400"]:
        assert letter["reason"] == "http_400" and letter["attempts"] == 1
        assert letter["event"]["messageId"] == letter["messageId"]
        assert letter["request"]["method"] == "POST"
        assert orjson.loads(letter["request"]["body"])["messageId"] == letter["messageId"]
        assert letter["response"]["status"] == 400
        assert letter["request"]["headers"]["Authorization"] == "***"
        assert letter["request"]["headers"]["X-Signature"].startswith("sha256=")
    for letter in dead_by_name["dwindow"]:
        assert letter["retriesExhausted"] and letter["reason"] == "retries_exhausted"
        assert letter["error"]["reason"] == "http_503" and letter["response"]["status"] == 503
        assert letter["attempts"] == sinks["dwindow"].attempts[letter["messageId"]] >= 2
    # Retry-After: 1 is honoured: the second attempt comes at least a second after the first.
    for message in produced["d429"]:
        first, second = sinks["d429"].requests_for(message["messageId"])[:2]
        assert second.at - first.at >= 0.95


async def test_not_due_retries_wait_without_blocking_fresh_events(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    topics = topics_for(kafka_ns)
    ws = make_workspace(
        kafka_ns, [destination("hook", sink.url, backoff_min="3s", backoff_max="3s")]
    )

    def flaky_first(events: list[dict[str, Any]], partner: Sink) -> Decision | None:
        late = [e for e in events if e["properties"]["behavior"] == "late"]
        if any(partner.attempts[str(e["messageId"])] == 1 for e in late):
            return 503, {}
        return None

    sink.script = flaky_first
    async with running_agent(ws, ["hook"]) as (agent, _ops):
        lane = agent.lanes["hook"]
        late = [event(i, prefix="late", behavior="late") for i in range(6)]
        await produce_events(kafka_ns, topics.destination("hook"), late)
        await wait_until(lambda: sum(sink.attempts[e["messageId"]] for e in late) == 6, timeout=15)
        fresh = [event(i, prefix="fresh") for i in range(40)]
        await produce_events(kafka_ns, topics.destination("hook"), fresh)
        await wait_until(
            lambda: {e["messageId"] for e in fresh} <= sink.unique_delivered,
            timeout=15,
            what="fresh events delivered",
        )
        # Fresh traffic went through while every retry was still waiting for its due time.
        assert all(sink.attempts[e["messageId"]] == 1 for e in late)
        await wait_until(
            lambda: {e["messageId"] for e in late} <= sink.unique_delivered,
            timeout=15,
            what="late events delivered once due",
        )
        # Paused, not polled in a loop: a retry partition is deferred about once per wait.
        assert 1 <= lane.fetcher.deferrals <= 3 * kafka_ns.partitions
    for message in late:
        first, second = sink.requests_for(message["messageId"])[:2]
        assert second.at - first.at >= 2.9


async def test_slow_or_failing_destination_does_not_delay_a_healthy_one(
    kafka_ns: KafkaSettings, sink: Sink, sink2: Sink
) -> None:
    """Counts within a bound window; no timing assertion on the fast path."""
    topics = topics_for(kafka_ns)
    healthy, slow = sink, sink2
    slow.slow(2.0)
    ws = make_workspace(
        kafka_ns,
        [
            destination("fast", healthy.url),
            destination("slow", slow.url, timeout="5s", concurrency=2, max_in_flight_events=20),
        ],
    )
    n = 200
    async with running_agent(ws, ["fast", "slow"], grace=6.0) as (agent, _ops):
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, agent.lanes["slow"].in_flight)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(
            produce_events(
                kafka_ns, topics.destination("fast"), [event(i, prefix="f") for i in range(n)]
            ),
            produce_events(
                kafka_ns, topics.destination("slow"), [event(i, prefix="s") for i in range(n)]
            ),
        )
        await wait_until(
            lambda: len(healthy.unique_delivered) == n,
            timeout=30,
            what="healthy destination delivered everything",
        )
        assert len(slow.unique_delivered) < n // 4  # the slow one still lags far behind
        # Now the slow partner only answers 503: its events cycle through the retry topic.
        slow.fail(503)
        more = [event(i, prefix="f2") for i in range(n)]
        await produce_events(kafka_ns, topics.destination("fast"), more)
        await produce_events(
            kafka_ns, topics.destination("slow"), [event(i, prefix="s2") for i in range(n)]
        )
        await wait_until(
            lambda: len(healthy.unique_delivered) == 2 * n,
            timeout=30,
            what="healthy destination delivered the second wave",
        )
        assert len(slow.unique_delivered) < n // 4
        assert agent.lanes["slow"].in_flight > 0
        assert agent.health()[0]  # slow and failing is not stalled
        assert agent.lanes["slow"].lag > 0 and agent.lanes["fast"].lag == 0
        watcher.cancel()
        # Bounded memory: the slow lane never held more than its in-flight bound.
        assert 0 < peak <= 20
        loop = asyncio.get_running_loop()
        started = loop.time()
        await agent.stop()
        stopped_in = loop.time() - started
    assert stopped_in < 6.0 + 1.0
    assert healthy.duplicates == 0


async def test_metrics_of_a_known_run(kafka_ns: KafkaSettings, sink: Sink) -> None:
    """Exact values on /metrics: 6 ok, 3 flaky (one 503), 1 throttled (one 429), 2 rejected."""
    topics = topics_for(kafka_ns)
    ws = make_workspace(kafka_ns, [destination("hook", sink.url)])
    behaviors = ["ok"] * 6 + ["flaky"] * 3 + ["throttle"] + ["reject"] * 2

    def script(events: list[dict[str, Any]], partner: Sink) -> Decision | None:
        [e] = events
        first = partner.attempts[str(e["messageId"])] == 1
        behavior = e["properties"]["behavior"]
        if behavior == "reject":
            return 400, {}
        if behavior == "flaky" and first:
            return 503, {}
        if behavior == "throttle" and first:
            return 429, {"Retry-After": "1"}
        return 200, {}

    sink.script = script
    async with running_agent(ws, ["hook"]) as (agent, ops):
        produced = [event(i, behavior=b) for i, b in enumerate(behaviors)]
        await produce_events(kafka_ns, topics.destination("hook"), produced)
        await wait_until(lambda: len(sink.unique_delivered) == 10, timeout=20)
        await wait_until(lambda: agent.lanes["hook"].in_flight == 0, timeout=10)
        parsed = samples(await scrape(ops.port))
        statuses = values(await consume(kafka_ns, topics.status, expect=16, settle=0.5))
        # Liveness: healthy while idle; unhealthy once work waits and nothing finishes.
        lane = agent.lanes["hook"]
        assert agent.health() == (True, "hook: lag 0, 0 in flight")
        lane.fetcher.lag = 5
        assert agent.health()[0]  # lag with recent progress is not a stall
        lane._last_progress -= lane.stall_after + 1
        healthy, detail = agent.health()
        assert not healthy and "no outcome for" in detail and "lag 5" in detail
        lane.fetcher.lag = 0
        assert agent.health()[0]  # idle (no lag, nothing in flight) is never a stall

    def metric(name: str, **labels: str) -> float:
        return value(parsed, name, destination="hook", **labels)

    assert metric("router_delivery_received_total", origin="fresh") == 12
    assert metric("router_delivery_received_total", origin="retry") == 4
    assert metric("router_delivery_delivered_total") == 10
    assert metric("router_delivery_retries_total", reason="http_503") == 3
    assert metric("router_delivery_retries_total", reason="http_429") == 1
    assert metric("router_delivery_failed_total", reason="http_400") == 2
    assert metric("router_delivery_dlq_total") == 2
    assert metric("router_delivery_in_flight_events") == 0
    assert metric("router_delivery_latency_seconds_count") == 10
    assert metric("router_delivery_latency_seconds_bucket", le="30.0") == 10
    assert metric("router_delivery_requests_total", result="2xx") == 10
    assert metric("router_delivery_requests_total", result="5xx") == 3
    assert metric("router_delivery_requests_total", result="4xx") == 3
    assert metric("router_delivery_request_seconds_count") == 16
    assert metric("router_delivery_consumer_lag_records") == 0
    assert (
        sorted(s["outcome"] for s in statuses) == ["delivered"] * 10 + ["dlq"] * 2 + ["retry"] * 4
    )
    retry_statuses = [s for s in statuses if s["outcome"] == "retry"]
    assert all(
        s["error"]["response"]["status"] in (503, 429) and s["dueAt"] for s in retry_statuses
    )
    delivered_after_retry = [
        s for s in statuses if s["outcome"] == "delivered" and s["attempts"] == [2]
    ]
    assert len(delivered_after_retry) == 4


async def test_stop_hands_off_unfinished_work_to_the_next_agent(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    topics = topics_for(kafka_ns)
    sink.slow(0.5)
    ws = make_workspace(kafka_ns, [destination("hook", sink.url, timeout="3s", concurrency=2)])
    produced = [event(i) for i in range(40)]
    loop = asyncio.get_running_loop()
    async with running_agent(ws, ["hook"], grace=3.0) as (agent, _ops):
        await produce_events(kafka_ns, topics.destination("hook"), produced)
        await wait_until(lambda: len(sink.unique_delivered) >= 4, timeout=15)
        started = loop.time()
        await agent.stop()
        stopped_in = loop.time() - started
        handed_off = len(produced) - len(sink.unique_delivered)
    assert stopped_in < 3.0 + 1.0
    assert handed_off > 0
    sink.ok()
    async with running_agent(ws, ["hook"]):
        await wait_until(
            lambda: len(sink.unique_delivered) == len(produced),
            timeout=20,
            what="the next agent delivered the rest",
        )
    # Committed before stopping: the next agent resent little, if anything.
    assert sink.duplicates <= 2


async def test_partial_batches_wait_flush_interval_for_more_events(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    """Loaders batch by rows and time: three small polls make one request, not three."""
    topics = topics_for(kafka_ns)
    ws = make_workspace(
        kafka_ns, [destination("loader", sink.url, batch_size=30, flush_interval="3s")]
    )
    async with running_agent(ws, ["loader"]):
        for start in (0, 10, 20):
            batch = [event(i) for i in range(start, start + 10)]
            await produce_events(kafka_ns, topics.destination("loader"), batch)
            await asyncio.sleep(0.3)
        await wait_until(lambda: len(sink.unique_delivered) == 30, timeout=20)
        assert [len(r.events) for r in sink.requests] == [30]
        # A partial batch goes out once flush_interval passed with nothing more coming.
        await produce_events(kafka_ns, topics.destination("loader"), [event(99)])
        await wait_until(lambda: len(sink.unique_delivered) == 31, timeout=20)
        assert [len(r.events) for r in sink.requests] == [30, 1]


async def test_dead_letters_are_logged_once_per_interval(
    kafka_ns: KafkaSettings, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    topics = topics_for(kafka_ns)
    sink.fail(400)
    ws = make_workspace(kafka_ns, [destination("rejects", sink.url)])
    async with running_agent(ws, ["rejects"]) as (agent, _ops):
        with caplog.at_level("WARNING", logger="router.delivery.accounting"):
            await produce_events(
                kafka_ns, topics.destination("rejects"), [event(i) for i in range(5)]
            )
            await wait_until(
                lambda: agent.lanes["rejects"].in_flight == 0 and bool(caplog.records), timeout=20
            )
            await asyncio.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    # The first dead letter is said at once; the rest are summed into the next line (here the
    # one said at shutdown), never one line per event.
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith("rejects: ") and "http_400" in lines[0]
    assert "HTTP 400 from" in lines[0]
    total = sum(int(line.split(": ")[1].split(" ")[0]) for line in lines)
    assert total == 5


async def test_call_types_the_partner_does_not_take_are_dead_lettered_alone(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    """The processor filters these; the lane still refuses one that arrives (config race)."""
    topics = topics_for(kafka_ns)
    dest = destination("tracks", sink.url)
    dest["type"] = "test-track-only"
    ws = make_workspace(kafka_ns, [dest])
    identify = {**event(1), "type": "identify", "traits": {"plan": "pro"}}
    identify.pop("event", None)
    odd = {**event(2), "type": ["track"]}  # hand-made: not even a string
    async with running_agent(ws, ["tracks"]):
        await produce_events(kafka_ns, topics.destination("tracks"), [event(0), identify, odd])
        await wait_until(lambda: len(sink.unique_delivered) == 1, timeout=20)
        dead = values(await consume(kafka_ns, topics.dead_letter("tracks"), expect=2))
    assert [(d["reason"], d["messageId"]) for d in dead] == [
        ("unsupported_type", "m-1"),
        ("unsupported_type", "m-2"),
    ]


async def test_events_a_destination_does_not_choose_are_counted_as_filtered(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    topics = topics_for(kafka_ns)
    dest = destination("choosy", sink.url)
    dest["type"] = "test-choosy"
    ws = make_workspace(kafka_ns, [dest])
    produced = [event(i, behavior="ok" if i % 2 else "skip") for i in range(6)]
    async with running_agent(ws, ["choosy"]) as (agent, ops):
        await produce_events(kafka_ns, topics.destination("choosy"), produced)
        await wait_until(lambda: len(sink.unique_delivered) == 3, timeout=20)
        await wait_until(lambda: agent.lanes["choosy"].in_flight == 0, timeout=10)
        parsed = samples(await scrape(ops.port))
        statuses = values(await consume(kafka_ns, topics.status, expect=4, settle=0.5))
        dead = await consume(kafka_ns, topics.dead_letter("choosy"), settle=0.3)
    assert sink.unique_delivered == {"m-1", "m-3", "m-5"} and not dead
    filtered = value(
        parsed, "router_delivery_filtered_total", destination="choosy", reason="not_chosen"
    )
    assert filtered == 3
    skipped = [s for s in statuses if s["outcome"] == "filtered"]
    assert {s["reason"] for s in skipped} == {"not_chosen"}
    assert sorted(m for s in skipped for m in s["messageIds"]) == ["m-0", "m-2", "m-4"]


async def test_a_stop_sends_partial_batches_at_once_and_commits_them(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    """Events waiting for flush_interval go out when the agent stops, not after the wait."""
    topics = topics_for(kafka_ns)
    ws = make_workspace(
        kafka_ns, [destination("loader", sink.url, batch_size=1000, flush_interval="60s")]
    )
    async with running_agent(ws, ["loader"], grace=5.0) as (agent, _ops):
        await produce_events(kafka_ns, topics.destination("loader"), [event(i) for i in range(5)])
        await wait_until(lambda: agent.lanes["loader"].in_flight == 5, timeout=20)
        group = agent.lanes["loader"].group_id
        assert not sink.requests  # waiting for more events (60 s)
    assert len(sink.unique_delivered) == 5  # sent by the stop, within its grace
    ends = await end_offsets(kafka_ns, topics.destination("loader"))
    assert await committed_offsets(kafka_ns, group, topics.destination("loader")) == ends


async def test_flush_now_sends_what_waits_for_flush_interval(
    kafka_ns: KafkaSettings, sink: Sink
) -> None:
    """Draining before a stop: a loader's partial batch goes out at once, and later ones too."""
    topics = topics_for(kafka_ns)
    ws = make_workspace(
        kafka_ns, [destination("loader", sink.url, batch_size=1000, flush_interval="60s")]
    )
    async with running_agent(ws, ["loader"]) as (agent, _ops):
        await produce_events(kafka_ns, topics.destination("loader"), [event(i) for i in range(3)])
        await wait_until(lambda: agent.lanes["loader"].in_flight == 3, timeout=20)
        await agent.flush_now()
        await wait_until(lambda: len(sink.unique_delivered) == 3, timeout=20)
        await produce_events(kafka_ns, topics.destination("loader"), [event(9)])
        await wait_until(lambda: len(sink.unique_delivered) == 4, timeout=20)
