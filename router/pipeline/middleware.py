"""Source middleware: edits every event of a source before anything else sees it.

The chain owns its events (they are freshly decoded and not yet shared), so the built-ins
mutate in place; no copies on this path.

- ``drop_fields``: remove dot paths (lists fan out, as in the destination filters).
- ``hash_fields``: replace each value by the hex digest of ``salt + text``; ``text`` is a
  string as-is, a number as written in JSON, ``true``/``false``, or the compact sorted-key
  JSON of an object or list. Missing fields and nulls are left alone (there is nothing to
  pseudonymize). Lists fan out.
- ``rename_fields``: move ``old -> new`` dot paths, in order; a missing source is a no-op.
- ``add_context``: merge ``values`` into ``context`` (created if missing). Keys may be dot
  paths (``app.env``) and nested objects merge key by key; on a conflict the config wins,
  because the operator set it deliberately and the client's value cannot be trusted more.
- ``event_name_case``: recase a track's ``event`` or a page/screen's ``name``.
- ``function``: a user callable ``module.path:callable``, imported at compile time and called
  as ``fn(event)`` or ``fn(event, options)`` (decided once from its signature). It returns
  the event to continue with (the same dict or a new one), or None to drop the event. If it
  raises, or returns something other than a dict or None, the chain raises
  :class:`MiddlewareError`; the processor dead-letters that one event with reason
  ``middleware_error`` and goes on with the rest. ``options`` is shared by every call:
  treat it as read-only.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import orjson

from router.config import (
    AddContext,
    DropFields,
    EventNameCase,
    HashFields,
    Middleware,
    RenameFields,
    UserFunction,
)
from router.pipeline.casing import to_case
from router.pipeline.paths import (
    Editor,
    PathSpec,
    compile_delete_in_place,
    compile_update_in_place,
    set_in_place,
    split_path,
)
from router.spec import Event, edit_may_invalidate

logger = logging.getLogger(__name__)

Step: TypeAlias = Callable[[Event], Event | None]

_NAME_FIELD = {"track": "event", "page": "name", "screen": "name"}


class MiddlewareImportError(ValueError):
    """A ``function`` middleware cannot be imported or is not a usable callable."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"function {name!r}: {problem}")


class MiddlewareError(Exception):
    """A user function failed on one event; that event goes to the dead-letter topic."""

    reason = "middleware_error"

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = name
        self.cause = cause
        super().__init__(f"middleware function {name!r} failed: {type(cause).__name__}: {cause}")


# ---------------------------------------------------------------- built-ins


def _drop_fields(item: DropFields) -> Step:
    return compile_delete_in_place(item.fields)


def hash_text(value: Any) -> str:
    """The text a hash covers (see ``hash_fields`` above; PII hashing uses the same)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _hash_fields(item: HashFields) -> Step:
    salt = item.salt
    # hashlib.sha256 and friends: the same digests as hashlib.new(name), without the lookup
    # by name on every value.
    algorithm: Callable[..., Any] = getattr(hashlib, item.algorithm)

    def digest(value: Any) -> Any:
        if value is None:
            return None
        data = (salt + hash_text(value)).encode()
        # Pseudonymization, not a security boundary; the algorithm is the operator's choice.
        return algorithm(data, usedforsecurity=False).hexdigest()

    updates = [compile_update_in_place(split_path(path), digest) for path in item.fields]
    if len(updates) == 1:
        return updates[0]

    def hash_fields(event: Event) -> Event:
        for update in updates:
            update(event)
        return event

    return hash_fields


def _rename_fields(item: RenameFields) -> Step:
    pairs: list[tuple[PathSpec, PathSpec]] = [
        (split_path(old), split_path(new)) for old, new in item.fields.items()
    ]

    def rename_fields(event: Event) -> Event:
        Editor(event, in_place=True).rename(pairs)
        return event

    return rename_fields


def _leaves(
    values: dict[str, Any], prefix: tuple[str, ...] = ()
) -> Iterable[tuple[tuple[str, ...], Any]]:
    """``{"app": {"env": "x"}, "a.b": 1}`` -> ``(("app", "env"), "x"), (("a", "b"), 1)``."""
    for key, value in values.items():
        path = prefix + split_path(key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def _add_context(item: AddContext) -> Step:
    leaves = list(_leaves(item.values))

    def add_context(event: Event) -> Event:
        context = event.get("context")
        if not isinstance(context, dict):
            context = event["context"] = {}
        for path, value in leaves:
            # A fresh copy of containers per event: events must not share config objects.
            fresh = copy.deepcopy(value) if isinstance(value, dict | list) else value
            set_in_place(context, path, fresh)
        return event

    return add_context


def _event_name_case(item: EventNameCase) -> Step:
    case = item.case

    def event_name_case(event: Event) -> Event:
        kind = event.get("type")
        field = _NAME_FIELD.get(kind) if isinstance(kind, str) else None
        if field is not None:
            name = event.get(field)
            if isinstance(name, str):
                event[field] = to_case(name, case)
        return event

    return event_name_case


# ---------------------------------------------------------------- user functions


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``module.path:callable`` and check that it takes (event) or (event, options).

    Raises:
        MiddlewareImportError: the module cannot be imported, lacks the attribute, the
            attribute is not callable, or its signature fits neither form.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise MiddlewareImportError(spec, "expected 'module.path:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing user code is a config problem
        raise MiddlewareImportError(
            spec, f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    function = getattr(module, attribute, None)
    if function is None:
        raise MiddlewareImportError(spec, f"module {module_name!r} has no {attribute!r}")
    if not callable(function):
        raise MiddlewareImportError(spec, f"{attribute!r} is not callable")
    _takes_options(function, spec)
    return function  # type: ignore[no-any-return]


def _takes_options(function: Callable[..., Any], spec: str) -> bool:
    """Whether to call ``fn(event, options)`` rather than ``fn(event)``."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return False  # some builtins have no signature: call them the simple way
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    required = [p for p in positional if p.default is p.empty]
    required_keywords = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if len(required) > 2 or required_keywords or not (positional or variadic):
        raise MiddlewareImportError(spec, "must accept (event) or (event, options)")
    return len(positional) >= 2 or variadic


def _user_function(item: UserFunction) -> Step:
    spec = item.function
    function = load_function(spec)
    options = copy.deepcopy(item.options)
    with_options = _takes_options(function, spec)

    def user_function(event: Event) -> Event | None:
        try:
            result = function(event, options) if with_options else function(event)
        except Exception as exc:  # user code: any failure dead-letters this one event
            raise MiddlewareError(spec, exc) from exc
        if result is None or isinstance(result, dict):
            return result
        raise MiddlewareError(
            spec, TypeError(f"returned {type(result).__name__}, expected a dict or None")
        )

    return user_function


# ---------------------------------------------------------------- the chain


def _step(item: Middleware) -> Step:
    if isinstance(item, DropFields):
        return _drop_fields(item)
    if isinstance(item, HashFields):
        return _hash_fields(item)
    if isinstance(item, RenameFields):
        return _rename_fields(item)
    if isinstance(item, AddContext):
        return _add_context(item)
    if isinstance(item, EventNameCase):
        return _event_name_case(item)
    if isinstance(item, UserFunction):
        return _user_function(item)
    raise TypeError(f"unknown middleware {item!r}")  # pragma: no cover - config guards


def _may_invalidate(item: Middleware) -> bool:
    """Whether the step can turn a valid event into an invalid one (see spec.recheck)."""
    if isinstance(item, DropFields | HashFields):
        return any(edit_may_invalidate(split_path(path)) for path in item.fields)
    if isinstance(item, RenameFields):
        return any(
            edit_may_invalidate(split_path(path)) for pair in item.fields.items() for path in pair
        )
    # add_context: context holds anything. event_name_case can empty a name ("!!!") or
    # lengthen it past 255 (snake case adds "_"); a user function can do anything.
    return not isinstance(item, AddContext)


class MiddlewareChain:
    """A source's compiled middleware, applied in config order to events it owns.

    Attributes:
        may_invalidate: some step can make a valid event invalid, so what the chain returns
            must be validated again.
        runs_user_code: a ``function`` step runs; it may also nest the event arbitrarily deep
            or put values in it that are not JSON.
    """

    __slots__ = ("_steps", "empty", "may_invalidate", "runs_user_code")

    def __init__(self, items: Sequence[Middleware]) -> None:
        self._steps = tuple(_step(item) for item in items)
        self.empty = not self._steps
        self.may_invalidate = any(map(_may_invalidate, items))
        self.runs_user_code = any(isinstance(item, UserFunction) for item in items)

    def __call__(self, event: Event) -> Event | None:
        """Apply every step; returns the (usually same, mutated) event, or None if dropped.

        Raises:
            MiddlewareError: a user function raised or returned something other than a dict
                or None.
        """
        for step in self._steps:
            result = step(event)
            if result is None:
                return None
            event = result
        return event


def compile_middleware(items: Sequence[Middleware]) -> MiddlewareChain:
    """Compile a source's middleware once (user functions are imported here).

    Raises:
        MiddlewareImportError: a ``function`` middleware cannot be imported or called.
    """
    return MiddlewareChain(items)
