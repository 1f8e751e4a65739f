"""Message templates: Mustache (the logic-less subset of Segment's Handlebars templates).

``{{properties.total}}``, ``{{#properties.products}}{{name}} {{/properties.products}}``,
``{{^traits.email}}no email{{/traits.email}}``. Why Mustache: a template only looks values
up. The context is the event as decoded JSON (dicts, lists, strings, numbers), and pystache
reads attributes or calls methods only on objects of non-builtin types, which JSON never
yields, so ``{{event.upper}}`` or ``{{properties.__class__}}`` render nothing; partials
(``{{> name}}``) are disabled (no file is ever read); missing values render empty. Values are
escaped for Slack's markup (``&``, ``<``, ``>``); objects and arrays render as JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
import pystache
from pystache.parsed import ParsedTemplate


def slack_escape(value: str) -> str:
    """Slack's three control characters, escaped as its message formatting asks."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Renderer(pystache.Renderer):  # type: ignore[misc]  # pystache is untyped
    def str_coerce(self, val: Any) -> str:
        if isinstance(val, bool):
            return "true" if val else "false"
        if isinstance(val, dict | list):
            return orjson.dumps(val).decode()
        return str(val)


_RENDERER = _Renderer(missing_tags="ignore", partials={}, escape=slack_escape)


class TemplateError(ValueError):
    pass


def compile_template(source: str) -> ParsedTemplate:
    """Parse once at start; a malformed template is a settings error, not a delivery one."""
    try:
        return pystache.parse(source)
    except Exception as exc:  # noqa: BLE001 - pystache raises several types for bad input
        raise TemplateError(f"invalid template: {exc}") from None


def render(template: ParsedTemplate, *contexts: dict[str, Any]) -> str:
    """Later contexts win over earlier ones (the event over the helpers)."""
    return str(_RENDERER.render(template, *contexts))
