"""`router plan import | check | infer` as a person runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from router.broker.topics import Topics
from router.config import KafkaSettings
from router.plans.formats import convert
from tests.kafka_helpers import produce

ROOT = Path(__file__).resolve().parents[2]
EXPORT = Path(__file__).parent / "segment_export.json"


def router(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        input=stdin,
        check=False,
    )


def jsonl(path: Path, events: list[dict[str, Any] | str]) -> Path:
    lines = [e if isinstance(e, str) else orjson.dumps(e).decode() for e in events]
    path.write_text("\n".join(lines) + "\n")
    return path


def order(message_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": message_id,
        "context": {"library": {"name": "analytics.js"}},
        "properties": properties,
    }


PRODUCTS = [{"product_id": "p1", "price": 10.0, "quantity": 1}]
SAMPLE: list[dict[str, Any] | str] = [
    order("m1", order_id="o1", total=10.0, currency="EUR", products=PRODUCTS),
    order("m2", order_id="o2", total="10", currency="EUR", products=PRODUCTS),
    order("m3", order_id="o3", total=5, currency="CHF"),
    {"type": "track", "event": "Wishlist Shared", "userId": "u2", "messageId": "m4"},
    {
        "type": "page",
        "userId": "u1",
        "messageId": "m5",
        "name": "Home",
        "properties": {"path": "/"},
    },
    "{not json",
    {"type": "track", "event": "Signed Up", "messageId": "m7", "properties": {"method": "email"}},
    {"type": "identify", "userId": "u3", "messageId": "m8", "traits": {"plan": "pro"}},
]


def test_import_writes_our_format(tmp_path: Path) -> None:
    result = router("plan", "import", str(EXPORT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# converted by `router plan import` from segment_export.json")
    plan = yaml.safe_load(result.stdout)
    assert plan == {"id": "acme-ecommerce-tp", **convert(orjson.loads(EXPORT.read_bytes())).plan}
    assert "4 track, 1 page, 0 screen, identify, group, common" in result.stderr
    assert "kept version 1" in result.stderr

    out = tmp_path / "acme.json"
    again = router("plan", "import", str(EXPORT), "--id", "acme", "--out", str(out))
    assert again.returncode == 0 and again.stdout == ""
    written = orjson.loads(out.read_bytes())
    assert written["id"] == "acme" and written["rules"] == plan["rules"]
    # and the written file is accepted as a plan in our shape
    assert router("plan", "import", str(out)).returncode == 0


def test_import_refuses_what_is_not_a_plan_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"events": [{"name": "A", "rules": {"type": 12}}]}')
    result = router("plan", "import", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("router plan import: ")
    assert "rules.track.A: not a valid JSON Schema (draft-07)" in result.stderr
    assert "Traceback" not in result.stderr
    missing = router("plan", "import", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("No such file or directory")


def test_check_reports_a_samples_violations(tmp_path: Path) -> None:
    sample = jsonl(tmp_path / "sample.jsonl", SAMPLE)
    result = router("plan", "check", str(EXPORT), "--events", str(sample))
    assert result.returncode == 1, result.stderr
    report = result.stdout
    assert report.startswith(
        f"plan acme-ecommerce-tp, sample {sample}: 8 event(s), 4 with violations "
        "(5 violation(s)), 2 invalid"
    )
    assert "  track 'Order Completed': 2 event(s)" in report
    assert (
        "Invalid Type       properties.total             x1  line 2: properties.total: "
        "Invalid type. Expected: number, given: string"
    ) in report
    assert "Required           properties.products" in report
    assert "line 4: track 'Wishlist Shared' (messageId m4)" in report
    assert "line 5: page 'Home' (messageId m5)" in report  # Page Viewed: url is required
    assert "  line 6: invalid_json: not valid JSON" in report
    assert "  line 7: missing_identity: userId or anonymousId is required" in report
    assert "would be blocked" not in report


def test_check_as_json_with_blocking(tmp_path: Path) -> None:
    sample = jsonl(tmp_path / "sample.jsonl", SAMPLE)
    result = router(
        "plan", "check", str(EXPORT), "-e", str(sample),
        "--unplanned-events", "block", "--violations", "block", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 1
    report = orjson.loads(result.stdout)
    assert report["events"] == 8 and report["valid"] == 6 and report["eventsWithViolations"] == 4
    assert report["blocked"] == {"schema_violation": 3, "unplanned_event": 1}
    wishlist = next(v for v in report["violations"] if v["eventName"] == "Wishlist Shared")
    assert wishlist == {
        "line": 4,
        "eventType": "track",
        "eventName": "Wishlist Shared",
        "eventMessageID": "m4",
        "violationType": "Unplanned Event",
        "violationField": "event",
        "violationDescription": "track event 'Wishlist Shared' not in tracking plan "
        "acme-ecommerce-tp",
        "blocked": "unplanned_event",
    }
    assert [i["code"] for i in report["invalid"]] == ["invalid_json", "missing_identity"]


def test_check_a_clean_sample_exits_zero_and_reads_stdin() -> None:
    clean = orjson.dumps(order("m1", order_id="o1", total=1, currency="USD", products=PRODUCTS))
    result = router("plan", "check", str(EXPORT), "--events", "-", stdin=clean.decode() + "\n")
    assert result.returncode == 0, result.stdout
    assert "1 event(s), 0 with violations (0 violation(s)), 0 invalid" in result.stdout


def test_check_a_plan_of_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "acme.json").write_bytes(EXPORT.read_bytes())
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "web", "write_keys": ["k"]}],
                "tracking_plans": [{"id": "acme", "file": "acme.json"}],
            }
        )
    )
    sample = jsonl(tmp_path / "s.jsonl", SAMPLE[:2])
    result = router("plan", "check", "acme", "-c", str(workspace), "-e", str(sample))
    assert result.returncode == 1 and result.stdout.startswith("plan acme, sample")
    unknown = router("plan", "check", "nope", "-c", str(workspace), "-e", str(sample))
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        f"router plan check: no tracking plan 'nope' in {workspace} (plans: acme)"
    )


def test_infer_from_a_file_drafts_a_plan_the_sample_passes(tmp_path: Path) -> None:
    events = [
        order("m1", order_id="o1", total=10, currency="EUR", products=PRODUCTS, coupon=None),
        order("m2", order_id="o2", total=12.5, currency="USD", products=[]),
        {"type": "page", "userId": "u", "name": "Home", "properties": {"path": "/"}},
        {"type": "page", "userId": "u", "properties": {"path": "/x", "title": "X"}},
        {"type": "identify", "userId": "u", "traits": {"email": "a@b.c", "age": 30}},
        {"type": "identify", "userId": "u"},
        {"type": "alias", "userId": "u", "previousId": "a"},
    ]
    sample = jsonl(tmp_path / "sample.jsonl", events)
    result = router("plan", "infer", "--from", str(sample), "--source", "web")
    assert result.returncode == 0, result.stderr
    plan = yaml.safe_load(result.stdout)
    assert plan["id"] == "web-plan"
    rules = plan["rules"]
    properties = rules["track"]["Order Completed"]["properties"]["properties"]
    assert properties["required"] == ["currency", "order_id", "products", "total"]
    assert properties["properties"]["total"] == {"type": "number"}
    assert properties["properties"]["coupon"] == {"type": "null"}
    assert properties["properties"]["products"]["items"]["required"] == [
        "price",
        "product_id",
        "quantity",
    ]
    assert sorted(rules["page"]) == ["Home", "Page Viewed"]
    traits = rules["identify"]["properties"]["traits"]
    assert traits["properties"] == {"age": {"type": "integer"}, "email": {"type": "string"}}
    assert "required" not in rules["identify"]  # one identify had no traits
    assert rules["alias"]["description"] == "seen 1 time(s) in the sample"
    assert "7 event(s), 0 invalid" in result.stderr

    drafted = tmp_path / "drafted.yaml"
    drafted.write_text(result.stdout)
    check = router("plan", "check", str(drafted), "-e", str(sample), "--unplanned-events", "block")
    assert check.returncode == 0, check.stdout


@pytest.mark.integration
async def test_infer_from_events_raw_reads_one_source_without_a_group(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(kafka.topic_prefix)
    web = [
        order(f"w{i}", order_id=f"o{i}", total=i, currency="EUR", products=PRODUCTS)
        for i in range(30)
    ]
    web.append({"type": "screen", "userId": "u", "name": "Feed", "properties": {"items": 3}})
    app = [{"type": "track", "event": "App Opened", "userId": "u", "messageId": "a1"}]
    await produce(kafka, topics.raw, web, headers=[("write-key", b"wk-web")])
    await produce(kafka, topics.raw, [{**app[0], "writeKey": "wk-app"}, b"{broken"])
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "kafka": {"topic_prefix": kafka.topic_prefix},
                "sources": [
                    {"id": "web", "write_keys": ["wk-web"]},
                    {"id": "app", "write_keys": ["wk-app"]},
                ],
            }
        )
    )
    base = ["plan", "infer", "-c", str(workspace), "--bootstrap", str(kafka.bootstrap_servers)]
    result = router(*base, "--from", "events.raw", "--source", "web", "--time-limit", "20")
    assert result.returncode == 0, result.stderr
    assert (
        f"read 33 record(s) of {topics.raw}: 31 event(s) of source web, 1 of other sources, "
        "1 invalid"
    ) in result.stderr
    rules = yaml.safe_load(result.stdout)["rules"]
    assert sorted(rules) == ["screen", "track"]
    assert list(rules["track"]) == ["Order Completed"]
    assert rules["screen"]["Feed"]["description"] == "seen 1 time(s) in the sample"

    limited = router(*base, "--source", "web", "--limit", "5")
    assert limited.returncode == 0, limited.stderr
    assert "read 5 record(s)" in limited.stderr

    missing = router(*base, "--from", "nothing.here", "--source", "web")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"router plan infer: topic {kafka.topic_prefix}nothing.here does not exist on "
        f"{kafka.bootstrap_servers}"
    )
    unknown = router(*base, "--source", "nobody")
    assert (
        unknown.returncode == 2 and "unknown source 'nobody' (sources: web, app)" in unknown.stderr
    )
