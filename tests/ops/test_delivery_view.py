"""Event Delivery folded from known ``delivery.status`` traffic: exact counts, P95 within the
histogram's resolution, errors grouped with their three parts, per-event lookup, a fold that
is idempotent and survives a restart of the console."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from router.config import KafkaSettings
from router.ops.status import BUCKETS, bucket_of, quantile
from tests.kafka_helpers import produce
from tests.ops.helpers import (
    eventually,
    failure,
    hook,
    running_console,
    status_v2,
    topics,
    unique_kafka,
    workspace,
)

pytestmark = pytest.mark.integration


def true_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def within_resolution(estimate: float | None, true: float) -> bool:
    """The estimate lies in the histogram bucket that holds the true value."""
    assert estimate is not None
    index = bucket_of(true)
    lower = BUCKETS[index - 1] if index > 0 else 0.0
    upper = BUCKETS[index] if index < len(BUCKETS) else math.inf
    return lower <= estimate <= upper


def test_quantile_matches_prometheus_interpolation() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    counts[bucket_of(0.3)] = 10  # (0.25, 0.5]
    counts[bucket_of(0.7)] = 10  # (0.5, 1.0]
    # rank 19 of 20: 9th of the 10 in (0.5, 1.0] -> 0.5 + 0.5 * 9/10
    assert quantile(0.95, counts) == pytest.approx(0.95)
    assert quantile(0.5, counts) == pytest.approx(0.5)
    counts[-1] = 100  # most in +Inf: Prometheus answers the highest finite bound
    assert quantile(0.95, counts) == BUCKETS[-1]
    assert quantile(0.95, [0] * len(counts)) is None


async def test_event_delivery_from_known_traffic(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    ws = workspace(
        kafka,
        tmp_path / "state",
        [hook("hook", "http://127.0.0.1:9/hook"), hook("other", "http://127.0.0.1:9/o")],
    )
    status_topic = topics(kafka).status
    now = time.time()
    latencies = [50.0 + 37.0 * i for i in range(40)]  # 50 ms .. 1.49 s
    records = []
    for r in range(4):  # 40 delivered in 4 requests of 10
        ids = [f"ok-{r * 10 + i}" for i in range(10)]
        records.append(
            status_v2(
                "hook",
                "delivered",
                ids,
                at=now - 60,
                status=200,
                latency_ms=latencies[r * 10 : r * 10 + 10],
            )
        )
    flaky = [f"flaky-{i}" for i in range(6)]
    records.append(
        status_v2(
            "hook",
            "retry",
            flaky,
            at=now - 50,
            reason="http_503",
            status=503,
            error=failure("http_503", 503),
        )
    )
    records.append(
        status_v2(
            "hook",
            "delivered",
            flaky[:3],
            at=now - 40,
            attempts=[2, 2, 2],
            status=200,
            latency_ms=[10_000.0, 10_500.0, None],
        )
    )
    records.append(
        status_v2(
            "hook",
            "retry",
            flaky[3:],
            at=now - 40,
            attempts=[2, 2, 2],
            reason="http_503",
            status=503,
            error=failure("http_503", 503),
        )
    )
    bad_event = {"type": "track", "event": "Bad Order", "messageId": "bad-0"}
    records.append(
        status_v2(
            "hook",
            "dlq",
            [f"bad-{i}" for i in range(4)],
            at=now - 30,
            reason="http_400",
            status=400,
            error=failure("http_400", 400, event=bad_event),
        )
    )
    records.append(
        status_v2(
            "hook",
            "dlq",
            ["tired-0", "tired-1"],
            at=now - 30,
            attempts=[7, 7],
            reason="retries_exhausted",
            status=503,
            error=failure("retries_exhausted", 503),
        )
    )
    records.append(records[0])  # an agent crash made it publish this outcome twice
    records.append(status_v2("hook", "delivered", [None], at=now - 20, latency_ms=[100.0]))
    records.append(  # an agent of format 1 (one record per event)
        {
            "v": 1,
            "destination": "hook",
            "destinationType": "webhook",
            "messageId": "v1-0",
            "outcome": "delivered",
            "attempt": 1,
            "latency": 0.2,
            "at": status_v2("hook", "delivered", [])["at"],
        }
    )
    records.append(status_v2("other", "delivered", [f"o-{i}" for i in range(5)], at=now - 10))
    records.append(  # two hours ago: outside a 1h window, inside 6h
        status_v2("hook", "delivered", ["old-0", "old-1"], at=now - 7200, latency_ms=[80, 90])
    )
    records.append(b"not a status record")
    await produce(kafka, status_topic, records, key=b"hook")

    store = tmp_path / "console.sqlite"
    async with running_console(ws, store) as (console, api):
        await eventually(lambda: _caught_up(console), timeout=30)
        view = await api.get("/api/v1/destinations/hook/delivery", window="1h")
        assert view["delivered"] == 40 + 3 + 1 + 1
        assert view["dead_lettered"] == 6
        assert view["retrying"] == 3
        assert view["not_delivered"] == 9
        assert view["retried"] == 9
        assert view["retry_backlog"] == 3
        observed = [*latencies, 10_000.0, 10_500.0, 100.0, 200.0]
        for q, key in ((0.95, "p95_seconds"), (0.5, "p50_seconds")):
            truth = true_quantile(observed, q) / 1000
            assert within_resolution(view[key], truth), (key, view[key], truth)
        errors = {e["reason"]: e for e in view["errors"]}
        assert set(errors) == {"http_503", "http_400", "retries_exhausted"}
        assert (errors["http_503"]["events"], errors["http_503"]["retried"]) == (9, 9)
        assert (errors["http_400"]["events"], errors["http_400"]["dead_lettered"]) == (4, 4)
        assert errors["retries_exhausted"]["dead_lettered"] == 2
        sample = errors["http_400"]["samples"][0]
        assert sample["event"] == bad_event
        assert sample["request"]["method"] == "POST"
        assert sample["request"]["headers"]["Authorization"] == "***"
        assert sample["response"]["status"] == 400
        assert sum(point["delivered"] for point in view["trend"]) == view["delivered"]
        assert sum(point["dead_lettered"] for point in view["trend"]) == 6

        wide = await api.get("/api/v1/destinations/hook/delivery", window="6h")
        assert wide["delivered"] == view["delivered"] + 2

        overview = await api.get("/api/v1/destinations", window="1h")
        rows = {row["id"]: row for row in overview["destinations"]}
        assert rows["other"]["delivered"] == 5
        assert rows["hook"]["delivered"] == view["delivered"]
        assert rows["hook"]["not_delivered"] == 9

        lookup = await api.get("/api/v1/events/flaky-1")
        (at_hook,) = lookup["destinations"]
        assert at_hook["destination"] == "hook"
        assert at_hook["state"] == "delivered"
        assert [(a["attempt"], a["outcome"]) for a in at_hook["attempts"]] == [
            (1, "retry"),
            (2, "delivered"),
        ]
        assert (await api.get("/api/v1/events/flaky-4"))["destinations"][0]["state"] == "retrying"
        assert (await api.get("/api/v1/events/bad-2"))["destinations"][0]["state"] == (
            "dead_lettered"
        )
        status, body = await api.call(
            "GET", "/api/v1/events/nobody", headers={"Authorization": api.headers["Authorization"]}
        )
        assert (status, body["code"]) == (404, "unknown_event")

    # The fold resumes from its checkpoint: nothing counted twice, new records counted once.
    await produce(
        kafka,
        status_topic,
        [status_v2("hook", "delivered", flaky[3:], attempts=[3, 3, 3], latency_ms=[1, 1, 1])],
        key=b"hook",
    )
    async with running_console(ws, store) as (console, api):
        await eventually(lambda: _caught_up(console), timeout=30)
        view = await api.get("/api/v1/destinations/hook/delivery", window="1h")
        assert view["delivered"] == 48
        assert view["retrying"] == 0
        assert view["retry_backlog"] == 0
        assert view["not_delivered"] == 6


async def _caught_up(console: object) -> bool:
    from router.ops.console import Console

    assert isinstance(console, Console)
    return console.caught_up.is_set()
