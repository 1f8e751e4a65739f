"""PII classification: fields declared PII are hashed or dropped for every destination that is
not allowed to receive them, as the last stage of the fan-out (after the destination's own
filters and transformations, so a field a transformation renamed or copied is caught too).

Rules (``privacy.pii``): a dot path (``context.traits.email``; lists fan out) or a glob over
field names (``*email*``, case-insensitive) matched at any depth inside ``properties``,
``traits`` and ``context``, each with ``hash`` (salted SHA-256 of the value, as hex) or
``drop``. A path rule wins over a pattern for the field it names. A destination opts out with
``pii: allow``, or receives some rules' fields in clear with ``pii: [<path or pattern>]``.

Hashing: ``sha256(salt + text).hexdigest()``, where ``text`` is a string as-is, a number as
written in JSON, ``true``/``false``, or the compact sorted-key JSON of an object or list (the
``hash_fields`` middleware's convention, so both give the same digest for the same salt);
nulls stay null. The salt (``privacy.hash_salt``) is a secret: without it, hashes of guessable
values such as emails could be reversed by hashing candidates.

Cost: compiled once per distinct set of rules in force; a destination with nothing to apply
gets no stage at all (no PII declared: the fan-out is unchanged). Path rules visit only the
containers on their paths; patterns visit every field of the three objects, with each field
name's verdict remembered. Events are never changed in place: a container is copied once,
on its first change, and only when something changed. Destinations with the same rules
share one result per event (the last input is remembered).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol

from router.config import Destination, PrivacySettings
from router.pipeline.middleware import hash_text
from router.pipeline.paths import split_path
from router.spec import edit_may_invalidate

Action = Literal["hash", "drop"]


class Redactor(Protocol):
    """One destination's PII stage: the event with its PII hashed or dropped (a copy, or the
    event itself when nothing applied)."""

    #: Whether its output must be validated again (a path rule on a field the event rules
    #: read, such as ``event`` or ``properties`` itself); name patterns never need it.
    may_invalidate: bool

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]: ...


#: Where field-name patterns apply (Segment's specs put a person's data in these).
PATTERN_ROOTS = ("properties", "traits", "context")
#: Field names whose verdict is remembered before the memo is emptied (bounded memory).
_MEMO_SIZE = 10_000


class _Trie:
    __slots__ = ("action", "children")

    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.action: Action | None = None


_EMPTY = _Trie()
_ACTIONS: tuple[Action, ...] = ("drop", "hash")


class _Stage:
    """The rules in force for some destinations, compiled."""

    def __init__(
        self,
        paths: list[tuple[tuple[str, ...], Action]],
        patterns: list[tuple[str, Action]],
        salt: str,
    ) -> None:
        self.root = _Trie()
        # A hash writes a string, a drop removes: only path rules can reach a checked field.
        self.may_invalidate = any(
            edit_may_invalidate(parts, None if action == "drop" else "hash")
            for parts, action in paths
        )
        for parts, action in paths:
            node = self.root
            for part in parts:
                node = node.children.setdefault(part, _Trie())
            node.action = action
        self.salt = salt
        # One regular expression per action; drop wins when both match a name.
        self._matchers: list[tuple[Action, re.Pattern[str]]] = []
        for action in _ACTIONS:
            found = [fnmatch.translate(p) for p, a in patterns if a == action]
            if found:
                self._matchers.append((action, re.compile("|".join(found), re.IGNORECASE)))
        self.has_patterns = bool(self._matchers)
        self._verdicts: dict[str, Action | None] = {}
        self._last_in: dict[str, Any] | None = None
        self._last_out: dict[str, Any] | None = None
        # The top-level keys to visit: the path rules' first segments, plus the pattern roots.
        self._roots = tuple(
            dict.fromkeys([*self.root.children, *(PATTERN_ROOTS if self.has_patterns else ())])
        )

    def digest(self, value: Any) -> Any:
        if value is None:
            return None
        data = (self.salt + hash_text(value)).encode()
        # Pseudonymization of values, not password storage: one SHA-256 is the design.
        return hashlib.sha256(data, usedforsecurity=False).hexdigest()

    def verdict(self, name: str) -> Action | None:
        verdicts = self._verdicts
        if name in verdicts:
            return verdicts[name]
        found: Action | None = None
        for action, matcher in self._matchers:
            if matcher.match(name):
                found = action
                break
        if len(verdicts) >= _MEMO_SIZE:
            verdicts.clear()
        verdicts[name] = found
        return found

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if event is self._last_in:
            # Another destination with the same rules, handed the very same event.
            assert self._last_out is not None
            return self._last_out
        out = event
        for key in self._roots:
            if key not in event:
                continue
            value = event[key]
            trie = self.root.children.get(key, _EMPTY)
            patterns = self.has_patterns and key in PATTERN_ROOTS
            if trie.action is not None:
                new = self._act(trie.action, value)
            elif isinstance(value, dict | list):
                new = self._walk(value, trie, patterns)
            else:
                continue
            if new is value:
                continue
            if out is event:
                out = dict(event)
            if new is _DROPPED:
                del out[key]
            else:
                out[key] = new
        self._last_in, self._last_out = event, out
        return out

    def _act(self, action: Action, value: Any) -> Any:
        return _DROPPED if action == "drop" else self.digest(value)

    def _walk(self, node: Any, trie: _Trie, patterns: bool) -> Any:
        if isinstance(node, list):
            items = node
            for index, item in enumerate(node):
                if isinstance(item, dict | list):
                    new = self._walk(item, trie, patterns)
                    if new is not item:
                        if items is node:
                            items = list(node)
                        items[index] = new
            return items
        if not isinstance(node, dict):
            return node
        out = node
        children = trie.children
        names = list(node) if patterns else [k for k in children if k in node]
        for name in names:
            value = node[name]
            sub = children.get(name)
            action = sub.action if sub is not None else None
            if action is None and patterns:
                action = self.verdict(name)
            if action is not None:
                if action == "hash" and value is None:
                    continue
                if out is node:
                    out = dict(node)
                if action == "drop":
                    del out[name]
                else:
                    out[name] = self.digest(value)
                continue
            if isinstance(value, dict | list) and (patterns or sub is not None):
                new = self._walk(value, sub or _EMPTY, patterns)
                if new is not value:
                    if out is node:
                        out = dict(node)
                    out[name] = new
        return out


class _Dropped:
    """The marker of a top-level field removed by a ``drop`` path rule."""


_DROPPED: Any = _Dropped()


class PiiRules:
    """The workspace's PII declarations; :meth:`for_destination` gives each one's stage."""

    def __init__(self, settings: PrivacySettings) -> None:
        self.rules = list(settings.pii)
        self.salt = settings.hash_salt.get_secret_value() if settings.hash_salt else ""
        self._stages: dict[frozenset[str], _Stage] = {}

    @property
    def empty(self) -> bool:
        return not self.rules

    def in_force(self, destination: Destination) -> list[str]:
        """Names of the rules applied on the way to ``destination``."""
        allowed = destination.pii
        if allowed == "allow":
            return []
        clear = set(allowed or ())
        return [rule.name for rule in self.rules if rule.name not in clear]

    def for_destination(self, destination: Destination) -> Redactor | None:
        """The stage for ``destination``, or None when no rule applies to it. Destinations
        under the same rules share one stage (and its per-event result)."""
        names = frozenset(self.in_force(destination))
        if not names:
            return None
        stage = self._stages.get(names)
        if stage is None:
            chosen = [rule for rule in self.rules if rule.name in names]
            paths = [(split_path(r.path), r.action) for r in chosen if r.path is not None]
            patterns = [(r.pattern, r.action) for r in chosen if r.pattern is not None]
            stage = self._stages[names] = _Stage(paths, patterns, self.salt)
        return stage


def then_redact(
    transform: Callable[[dict[str, Any]], dict[str, Any] | None] | None, redact: Redactor
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """``transform`` (None: no transformations) followed by ``redact``, as one callable the
    fan-out calls where it calls a destination's transformations."""
    if transform is None:
        return redact

    def transform_then_redact(event: dict[str, Any]) -> dict[str, Any] | None:
        transformed = transform(event)
        return None if transformed is None else redact(transformed)

    return transform_then_redact
