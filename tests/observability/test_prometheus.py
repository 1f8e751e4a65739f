"""A real Prometheus scrapes a running router and answers the dashboard's queries.

The metric names, labels, histogram buckets and the recording rules in
deploy/prometheus/rules.yml are checked the way Grafana uses them, not by parsing text.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from router.broker.embedded import free_port
from router.broker.topics import Topics
from router.config import KafkaSettings, Workspace
from router.delivery.agent import DeliveryAgent
from router.ops.server import OpsServer
from router.processor import Processor
from router.workspace import validate_workspace
from tests.delivery.sink import Sink
from tests.kafka_helpers import produce

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
P95 = (
    "histogram_quantile(0.95, sum by (le, destination) "
    "(rate(router_delivery_latency_seconds_bucket[1m])))"
)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's package)")
        pytest.skip("prometheus is not installed; run scripts/test.sh as root to install it")
    return found


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Prometheus on 127.0.0.1 scraping one ops port every second; yields (url, ops port)."""
    binary = prometheus_binary()
    ops_port, web_port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{ops_port}"]}]}
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{web_port}", ops_port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def query(session: aiohttp.ClientSession, url: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def eventually(
    session: aiohttp.ClientSession, url: str, promql: str, check: Any, limit: float = 45
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            result = await query(session, url, promql)
        except aiohttp.ClientError:
            result = []
        if result and check(result):
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql} never satisfied the check; last result {result}")


def workspace(kafka: KafkaSettings, state: Path, sink: Sink) -> Workspace:
    return validate_workspace(
        {
            "kafka": kafka.model_dump(exclude_none=True),
            "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
            "sources": [{"id": "web", "write_keys": ["wk-web"]}],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": sink.url},
                    "delivery": {"backoff_min": "100ms", "backoff_max": "200ms"},
                }
            ],
        }
    )


def test_recording_and_alert_rules_are_valid() -> None:
    prometheus_binary()
    promtool = shutil.which("promtool")
    assert promtool, "promtool ships with prometheus"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_prometheus_sees_deliveries_and_p95(
    prometheus: tuple[str, int], kafka: KafkaSettings, tmp_path: Path, sink: Sink
) -> None:
    url, ops_port = prometheus
    ws = workspace(kafka, tmp_path / "state", sink)
    registry = CollectorRegistry()
    processor = Processor(ws, registry)
    agent = DeliveryAgent(ws, ["hook"], registry)
    ops = OpsServer(registry, [processor, agent], port=ops_port)
    total = 120
    events = [
        {"type": "track", "event": "Clicked", "userId": f"u{i % 7}", "messageId": f"m-{i}"}
        for i in range(total)
    ]
    async with ops, processor, agent, aiohttp.ClientSession() as session:
        await produce(
            kafka, Topics(kafka.topic_prefix).raw, events, headers=[("write-key", b"wk-web")]
        )
        await produce(
            kafka,
            Topics(kafka.topic_prefix).raw,
            [b"not json"],
            key=b"x",
            headers=[("write-key", b"wk-web")],
        )
        delivered = await eventually(
            session,
            url,
            'sum(router_delivery_delivered_total{destination="hook"})',
            lambda r: float(r[0]["value"][1]) >= total,
        )
        assert float(delivered[0]["value"][1]) == total
        assert len(sink.unique_delivered) == total

        rejected = await eventually(
            session, url, "router_processor_rejected_total", lambda r: len(r) == 1
        )
        assert rejected[0]["metric"]["reason"] == "invalid_json"
        assert float(rejected[0]["value"][1]) == 1

        # The dashboard's P95 panel and the recording rule both give a latency for "hook".
        p95 = await eventually(session, url, P95, lambda r: r[0]["value"][1] != "NaN")
        assert p95[0]["metric"] == {"destination": "hook"}
        assert 0 < float(p95[0]["value"][1]) < 10
        recorded = await eventually(
            session, url, "router:delivery_latency_seconds:p95", lambda r: r[0]["value"][1] != "NaN"
        )
        assert recorded[0]["metric"]["destination"] == "hook"

        failed = await query(session, url, "sum(router_delivery_failed_total)")
        assert not failed or float(failed[0]["value"][1]) == 0
