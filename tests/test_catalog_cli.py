"""`router destinations`: the catalog list, a type's settings, and the Event Tester."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from router.cli import main
from tests.destinations.catalog import recent
from tests.fakes.ga4 import FakeGA4
from tests.fakes.mixpanel import FakeMixpanel
from tests.test_cli import run_router

GA4_SECRET = "ga4-secret-cli-4455"
MP_TOKEN = "mp-token-cli-6677"


def test_list_and_show() -> None:
    listed = run_router("destinations")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    listed_types = [line.split()[0] for line in lines]
    assert listed_types == sorted(listed_types)
    assert {"amplitude", "ga4", "mixpanel", "slack", "webhook"} <= set(listed_types)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)
    shown = run_router("destinations", "show", "ga4")
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()}
    assert "call types: page, track" in shown.stdout
    assert rows["api_secret"].split()[1:] == ["string", "yes", "yes"]
    assert rows["region"].split()[1:] == ["one", "of", "global|eu", '"global"', "no"]
    unknown = run_router("destinations", "show", "nope")
    assert unknown.returncode == 2 and "unknown destination type 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def workspace_file(tmp_path: Path, destinations: list[dict[str, Any]]) -> Path:
    path = tmp_path / "workspace.yaml"
    document = {"sources": [{"id": "web", "write_keys": ["wk-cli"]}], "destinations": destinations}
    path.write_text(yaml.safe_dump(document))
    return path


def event_file(tmp_path: Path, event: dict[str, Any]) -> Path:
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(event))
    return path


async def run_main(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


async def test_event_tester_uses_ga4_validation_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeGA4(api_secret=GA4_SECRET) as fake:
        config = workspace_file(
            tmp_path,
            [
                {
                    "id": "ga",
                    "name": "GA4",
                    "type": "ga4",
                    "sources": ["web"],
                    "settings": {
                        "measurement_id": fake.measurement_id,
                        "api_secret": GA4_SECRET,
                        "api_host": fake.base_url,
                    },
                }
            ],
        )
        event = {
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "timestamp": recent(),
            "properties": {"order_id": "o1", "revenue": 10},
        }
        code = await run_main(
            "destinations",
            "test",
            "ga",
            "--event",
            str(event_file(tmp_path, event)),
            "--config",
            str(config),
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "/debug/mp/collect" in out and '"name": "purchase"' in out
    assert "result: delivered" in out
    assert GA4_SECRET not in out
    assert not fake.collected  # the validation server records nothing
    assert [call.path for call in fake.calls] == ["/debug/mp/collect"]


async def test_event_tester_reports_refusals_and_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeMixpanel(token=MP_TOKEN) as fake:
        config = workspace_file(
            tmp_path,
            [
                {
                    "id": "mp",
                    "name": "Mixpanel",
                    "type": "mixpanel",
                    "sources": ["web"],
                    "settings": {"project_token": MP_TOKEN, "api_host": fake.base_url},
                }
            ],
        )
        fake.refuse_insert_ids = {"cli-1"}
        event = {"type": "track", "event": "E", "userId": "u1", "messageId": "cli-1"}
        code = await run_main(
            "destinations",
            "test",
            "mp",
            "--event",
            str(event_file(tmp_path, event)),
            "--config",
            str(config),
        )
        out = capsys.readouterr().out
        assert code == 1
        assert "result: refused (invalid_event)" in out and MP_TOKEN not in out
        bad = event_file(tmp_path, {"type": "track", "userId": "u1"})
        code = await run_main(
            "destinations", "test", "mp", "--event", str(bad), "--config", str(config)
        )
        err = capsys.readouterr().err
        assert code == 2 and "missing_event" in err and len(err.strip().splitlines()) == 1
        code = await run_main(
            "destinations", "test", "nope", "--event", str(bad), "--config", str(config)
        )
        assert code == 2 and "no destination 'nope'" in capsys.readouterr().err
