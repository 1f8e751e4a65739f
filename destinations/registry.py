"""Find destination plugins by type name, with no edit here per destination.

Two ways in:
- built-ins: every sub-package of :mod:`destinations` (one folder per destination) is
  imported once; its ``@register("type")`` decorator adds it;
- third-party packages: the entry-point group ``event_router.destinations``. An entry point
  may name a module (importing it runs its ``@register``) or a plugin class (registered under
  the entry point's name)::

      [project.entry-points."event_router.destinations"]
      acme = "acme_router_plugin:AcmeDestination"

A broken third-party plugin is logged and skipped; it cannot hide the others.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from destinations.base import AnyPlugin, DestinationPlugin, UnknownDestinationType

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "event_router.destinations"

PluginType = type[AnyPlugin]
P = TypeVar("P", bound=PluginType)

_plugins: dict[str, PluginType] = {}
_broken: dict[str, str] = {}
_discovered = False
_lock = threading.Lock()


def register(type_name: str) -> Callable[[P], P]:
    """Class decorator: make the plugin available as ``type: <type_name>``."""
    if not type_name or type_name != type_name.strip():
        raise ValueError("a destination type name must be a non-empty word")

    def decorate(cls: P) -> P:
        existing = _plugins.get(type_name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"destination type {type_name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        cls.type_name = type_name
        _plugins[type_name] = cls
        return cls

    return decorate


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def discover() -> None:
    """Import built-in plugin folders and entry points, once per process."""
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        import destinations

        for info in pkgutil.iter_modules(destinations.__path__):
            if info.ispkg:
                importlib.import_module(f"destinations.{info.name}")
        for entry in _entry_points():
            _load_entry_point(entry)


def _load_entry_point(entry: EntryPoint) -> None:
    try:
        loaded = entry.load()
    except Exception as exc:  # noqa: BLE001 - third-party code; report it, keep the others
        _broken[entry.name] = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "destination plugin %r (%s) failed to load: %s", entry.name, entry.value, exc
        )
        return
    if isinstance(loaded, type) and issubclass(loaded, DestinationPlugin):
        if entry.name not in _plugins:
            register(entry.name)(loaded)
    elif entry.name not in _plugins:
        # A module whose @register used another name is fine; one that registered nothing is not.
        logger.debug("entry point %r loaded %r without registering that name", entry.name, loaded)


def available() -> list[str]:
    discover()
    return sorted(_plugins)


def get_plugin(type_name: str) -> PluginType:
    """The plugin class for ``type_name``; UnknownDestinationType if there is none."""
    discover()
    plugin = _plugins.get(type_name)
    if plugin is None:
        raise UnknownDestinationType(_unknown_message(type_name))
    return plugin


def validate_settings(type_name: str, settings: dict[str, Any]) -> list[tuple[str, str]]:
    """(sub-path under ``settings``, message) problems, never echoing a value.

    An unknown type is one problem with the empty sub-path.
    """
    try:
        plugin = get_plugin(type_name)
    except UnknownDestinationType as exc:
        return [("", exc.message)]
    return plugin.validate_settings(settings)


def _unknown_message(type_name: str) -> str:
    known = ", ".join(sorted(_plugins)) or "none"
    if type_name in _broken:
        return f"destination type {type_name!r} failed to load ({_broken[type_name]})"
    return f"unknown destination type {type_name!r} (known: {known})"
