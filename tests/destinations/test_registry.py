from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from destinations import registry
from destinations.base import UnknownDestinationType
from destinations.registry import ENTRY_POINT_GROUP, get_plugin, register, validate_settings
from destinations.webhook import WebhookDestination


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A registry that has not discovered yet, restored afterwards."""
    monkeypatch.setattr(registry, "_plugins", dict(registry._plugins))
    monkeypatch.setattr(registry, "_broken", {})
    monkeypatch.setattr(registry, "_discovered", False)
    yield


def test_builtin_webhook_is_found() -> None:
    assert get_plugin("webhook") is WebhookDestination
    assert "webhook" in registry.available()


def test_unknown_type() -> None:
    with pytest.raises(UnknownDestinationType, match="unknown destination type 'nope'"):
        get_plugin("nope")
    problems = validate_settings("nope", {"url": "https://example.com"})
    assert len(problems) == 1
    assert problems[0][0] == ""
    assert "known: " in problems[0][1] and "webhook" in problems[0][1]


def test_validate_settings_paths_without_values() -> None:
    assert validate_settings("webhook", {"url": "https://example.com/x"}) == []
    problems = validate_settings(
        "webhook",
        {"url": "not a url at all", "secret": "s3cr3t", "headers": {"X-Key": "ab\ncd"}, "extra": 1},
    )
    paths = [path for path, _ in problems]
    assert paths == sorted(paths, key=paths.index)  # stable order, one per problem
    assert set(paths) == {"url", "secret", "headers", "extra"}
    rendered = repr(problems)
    for value in ("not a url at all", "s3cr3t", "ab\ncd", "ab\\ncd"):
        assert value not in rendered


def test_entry_point_plugins_and_broken_ones(
    fresh_registry: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entries = [
        EntryPoint("acme", "tests.destinations.acme_plugin:AcmeDestination", ENTRY_POINT_GROUP),
        EntryPoint("broken", "tests.destinations.no_such_module:Plugin", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "_entry_points", lambda: entries)
    plugin = get_plugin("acme")
    assert plugin.type_name == "acme"
    assert validate_settings("acme", {"api_key": "k-1234"}) == []
    assert validate_settings("acme", {}) == [("api_key", "Field required")]
    # A plugin that fails to import is reported, and does not hide the others.
    assert get_plugin("webhook") is WebhookDestination
    [(path, message)] = validate_settings("broken", {})
    assert path == "" and "failed to load" in message
    assert "broken" in caplog.text


def test_register_conflict(fresh_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("webhook")(type("Other", (WebhookDestination,), {}))
    with pytest.raises(ValueError):
        register(" spaced ")
