"""``router dlq list|show|redrive`` against a router whose partner refused some events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from router.config import KafkaSettings
from router.workspace import validate_workspace
from tests.delivery.sink import Sink
from tests.kafka_helpers import produce
from tests.ops.helpers import (
    TOKEN,
    WRITE_KEY,
    eventually,
    hook,
    running_router,
    topics,
    unique_kafka,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def dlq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", "dlq", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def refuse(events: list[dict[str, Any]], _sink: Sink) -> tuple[int, dict[str, str]] | None:
    kinds = {e.get("properties", {}).get("kind") for e in events}
    if "gone" in kinds:
        return 410, {}
    if "bad" in kinds:
        return 400, {}
    return None


async def test_list_show_and_redrive_from_the_command_line(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    async with Sink() as sink:
        sink.script = refuse
        document = {
            "kafka": kafka.model_dump(exclude_none=True),
            "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms"},
            "ops": {"admin_token": TOKEN},
            "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
            "destinations": [hook("hook", sink.url)],
        }
        ws = validate_workspace(document)
        config = tmp_path / "workspace.yaml"
        config.write_text(yaml.safe_dump(document))
        kinds = ["ok", "bad", "bad", "gone", "ok", "bad"]
        events = [
            {
                "type": "track",
                "event": "Clicked",
                "userId": f"u{i}",
                "messageId": f"d-{i}",
                "properties": {"kind": kind},
            }
            for i, kind in enumerate(kinds)
        ]
        async with running_router(ws, tmp_path / "c.sqlite") as (_, api, _):
            await produce(
                kafka, topics(kafka).raw, events, headers=[("write-key", WRITE_KEY.encode())]
            )

            async def four_letters() -> bool:
                body = await api.get("/api/v1/destinations/hook/dlq")
                return body["total"] == 4

            await eventually(four_letters, timeout=60)

            listed = dlq(config, "list", "-d", "hook", "--json")
            assert listed.returncode == 0, listed.stderr
            body = orjson.loads(listed.stdout)
            assert body["total"] == 4
            assert body["reasons"] == {"http_400": 3, "http_410": 1}
            human = dlq(config, "list", "-d", "hook")
            assert "4 letter(s): " in human.stdout
            assert "http_400 3" in human.stdout

            gone = next(x for x in body["letters"] if x["reason"] == "http_410")
            shown = dlq(config, "show", "-d", "hook", gone["id"], "--json")
            (letter,) = orjson.loads(shown.stdout)
            assert letter["letter"]["response"]["status"] == 410
            assert letter["letter"]["event"]["messageId"] == gone["messageId"]
            human = dlq(config, "show", "-d", "hook", gone["id"])
            assert f"letter {gone['id']} of hook: http_410" in human.stdout
            assert '"status": 410' in human.stdout

            nothing = dlq(config, "redrive", "-d", "hook")
            assert nothing.returncode == 1
            assert "choose letters" in nothing.stderr
            missing = dlq(config, "show", "-d", "hook", "9:999")
            assert missing.returncode == 1 and "no such dead letter" in missing.stderr
            unknown = dlq(config, "list", "-d", "nope")
            assert unknown.returncode == 1 and "no destination 'nope'" in unknown.stderr

            sink.script = None  # fixed
            redriven = dlq(config, "redrive", "-d", "hook", "--reason", "http_400")
            assert redriven.returncode == 0, redriven.stderr
            assert "redriven 3 of 3 letter(s)" in redriven.stdout

            async def delivered() -> bool:
                return {f"d-{i}" for i in (1, 2, 5)} <= sink.unique_delivered

            await eventually(delivered, timeout=60)
            after = orjson.loads(dlq(config, "list", "-d", "hook", "--json").stdout)
            assert [x["reason"] for x in after["letters"]] == ["http_410"]
            again = dlq(config, "redrive", "-d", "hook", "--reason", "http_400", "--json")
            assert orjson.loads(again.stdout)["redriven"] == 0
            everything = orjson.loads(dlq(config, "list", "-d", "hook", "--all", "--json").stdout)
            assert everything["total"] == 4
            assert sum(1 for x in everything["letters"] if not x["live"]) == 3
            assert all(sink.delivered[f"d-{i}"] == 1 for i in (1, 2, 5))
