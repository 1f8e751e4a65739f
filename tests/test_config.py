"""Workspace loading: every mistake reported with its path, secrets from the environment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from router.config import SECRETS, ConfigError, parse_duration
from router.workspace import load_workspace, validate_workspace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "workspace.yaml"


def test_example_workspace_is_valid() -> None:
    workspace = load_workspace(EXAMPLE)
    assert workspace.sources and workspace.destinations


def test_durations() -> None:
    assert parse_duration("4h") == 14400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(30) == 30
    with pytest.raises(ValueError):
        parse_duration("soon")
    for wrong in ([1], {"s": 1}, None, True):
        with pytest.raises(ValueError):
            parse_duration(wrong)  # type: ignore[arg-type]


def test_fetch_max_wait_takes_a_duration_within_its_bounds() -> None:
    base = {"sources": [{"id": "web", "write_keys": ["k-1"]}]}
    assert validate_workspace(base).kafka.fetch_max_wait == 0.02
    tuned = validate_workspace({**base, "kafka": {"fetch_max_wait": "500ms"}})
    assert tuned.kafka.fetch_max_wait == 0.5
    for wrong in ("1ms", "11s"):
        assert _problems({**base, "kafka": {"fetch_max_wait": wrong}})


def test_a_duration_of_the_wrong_type_is_a_problem_with_its_path() -> None:
    problems = _problems(
        {
            "sources": [{"id": "web", "write_keys": ["k-1"]}],
            "destinations": [
                {
                    "id": "d",
                    "name": "D",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": "https://example.com/"},
                    "delivery": {"timeout": [1]},
                }
            ],
        }
    )
    assert [path for path, _ in problems] == ["destinations[0].delivery.timeout"]


def _problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_workspace(data)
    return info.value.problems


def test_each_mistake_is_reported_with_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_SECRET", raising=False)
    problems = _problems(
        {
            "sources": [{"id": "web", "write_keys": ["k"], "midleware": []}],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": "http://127.0.0.1:1/x", "secret": "${MISSING_SECRET}"},
                    "filters": [{"type": "drop"}, {"type": "sample", "fraction": 2}],
                    "delivery": {"timeout": "soon"},
                }
            ],
        }
    )
    paths = dict(problems)
    assert paths["sources[0].midleware"] == "unknown key"
    assert paths["destinations[0].filters[0].if"] == "Field required"
    assert "less than or equal to 1" in paths["destinations[0].filters[1].fraction"]
    assert "not a duration" in paths["destinations[0].delivery.timeout"]
    assert (
        "destinations[0].settings.secret",
        "environment variable MISSING_SECRET is not set",
    ) in problems


def test_references_and_conditions_are_checked() -> None:
    problems = _problems(
        {
            "sources": [{"id": "web", "write_keys": ["k"]}, {"id": "app", "write_keys": ["k"]}],
            "destinations": [
                {
                    "id": "a",
                    "name": "A",
                    "type": "webhook",
                    "sources": ["nope"],
                    "settings": {"url": "http://127.0.0.1:1/"},
                },
            ],
        }
    )
    text = "\n".join(message for _, message in problems)
    assert "'k' is used more than once" in text
    assert "unknown source 'nope'" in text

    problems = _problems(
        {
            "sources": [{"id": "web", "write_keys": ["k"]}],
            "destinations": [
                {
                    "id": "a",
                    "name": "A",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": "http://127.0.0.1:1/"},
                    "filters": [{"type": "drop", "if": "event = "}],
                    "transformations": [{"type": "set_values", "values": {"userId": "x"}}],
                },
            ],
        }
    )
    paths = dict(problems)
    assert paths["destinations[0].filters[0].if"].startswith("invalid condition")
    assert "top-level id" in paths["destinations[0].transformations[0].values"]


def test_secrets_are_masked_in_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cr3t-value-xyz")
    workspace = validate_workspace(
        {
            "sources": [{"id": "web", "write_keys": ["k"]}],
            "destinations": [
                {
                    "id": "a",
                    "name": "A",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": "http://127.0.0.1:1/", "secret": "${HOOK_SECRET}"},
                }
            ],
        }
    )
    assert workspace.destinations[0].settings["secret"] == "s3cr3t-value-xyz"
    logger = logging.getLogger("test.secrets")
    caplog.handler.addFilter(SECRETS)
    with caplog.at_level(logging.INFO):
        logger.info("settings are %s", workspace.destinations[0].settings)
    assert "s3cr3t-value-xyz" not in caplog.text
    assert "***" in caplog.text


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text("sources:\n  - id: web\n    write_keys: [k\n")
    with pytest.raises(ConfigError) as info:
        load_workspace(path)
    assert info.value.problems[0][0].startswith("line ")


def test_masked_records_format_under_the_faust_workers_formatter() -> None:
    """Once a secret is registered every record is rewritten; mode's formatter (which hosts
    the roles) must still format it."""
    import io
    import logging

    from mode.utils.logging import ExtensionFormatter

    from router.config import SecretRegistry

    registry = SecretRegistry()
    registry.add("s3cr3t-value")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token %s, port %d", ("s3cr3t-value", 9), None
    )
    assert registry.filter(record)
    formatted = ExtensionFormatter(stream=io.StringIO(), fmt="%(message)s").format(record)
    assert formatted == "token ***, port 9"


def test_console_token_is_a_secret_of_16_characters_or_more() -> None:
    import pytest

    from router.config import ConfigError
    from router.workspace import validate_workspace

    base = {"sources": [{"id": "web", "write_keys": ["k1"]}]}
    with pytest.raises(ConfigError) as caught:
        validate_workspace({**base, "ops": {"admin_token": "short-token"}})
    assert caught.value.problems == [
        ("ops.admin_token", "the admin token must be at least 16 characters")
    ]
    assert "short-token" not in str(caught.value)
    workspace = validate_workspace({**base, "ops": {"admin_token": "a-long-enough-token"}})
    assert workspace.ops.admin_token is not None
    assert "a-long-enough-token" not in repr(workspace)


def test_a_default_also_stands_in_for_an_empty_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR:-default}`` as a shell and Compose read it: unset or empty -> the default."""
    monkeypatch.setenv("ROUTER_TEST_EMPTY", "")
    monkeypatch.delenv("ROUTER_TEST_UNSET", raising=False)
    workspace = validate_workspace(
        {
            "kafka": {"client_id": "${ROUTER_TEST_EMPTY:-from-default}"},
            "sources": [{"id": "web", "write_keys": ["${ROUTER_TEST_UNSET:-key-1234}"]}],
        }
    )
    assert workspace.kafka.client_id == "from-default"
    assert workspace.sources[0].write_keys == ["key-1234"]
