"""Word casing shared by the FQL functions and the ``event_name_case`` middleware.

One implementation on purpose: a filter written as ``snakecase(event) = 'order_completed'``
must agree with what ``event_name_case: snake`` produced upstream.

Words are split on whitespace, ``_``, ``-`` and camelCase boundaries (``orderCompleted``,
``HTTPRequest`` -> ``HTTP`` ``Request``); every other character stays inside its word.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Case = Literal["lower", "upper", "title", "snake", "kebab", "camel"]

_SEPARATORS = frozenset("_-")


def split_words(text: str) -> list[str]:
    """Split ``text`` into words: ``"orderCompleted_now"`` -> ``["order", "Completed", "now"]``."""
    words: list[str] = []
    current: list[str] = []
    size = len(text)
    for i, char in enumerate(text):
        if char.isspace() or char in _SEPARATORS:
            if current:
                words.append("".join(current))
                current = []
            continue
        if current and char.isupper():
            prev = current[-1]
            # "orderCompleted": lower/digit -> upper starts a word; "HTTPRequest": the last
            # capital of a run starts a word when a lowercase letter follows it.
            following_lower = i + 1 < size and text[i + 1].islower()
            if prev.islower() or prev.isdigit() or (prev.isupper() and following_lower):
                words.append("".join(current))
                current = []
        current.append(char)
    if current:
        words.append("".join(current))
    return words


def _capitalize(word: str) -> str:
    return word[:1].upper() + word[1:].lower()


def lowercase(text: str) -> str:
    """The whole string in lower case, separators untouched."""
    return text.lower()


def uppercase(text: str) -> str:
    """The whole string in upper case, separators untouched."""
    return text.upper()


def snakecase(text: str) -> str:
    """``"Order Completed"`` -> ``"order_completed"``."""
    return "_".join(word.lower() for word in split_words(text))


def kebabcase(text: str) -> str:
    """``"Order Completed"`` -> ``"order-completed"``."""
    return "-".join(word.lower() for word in split_words(text))


def titlecase(text: str) -> str:
    """``"order_completed"`` -> ``"Order Completed"`` (each word capitalized, rest lowered)."""
    return " ".join(_capitalize(word) for word in split_words(text))


def camelcase(text: str) -> str:
    """``"Order completed"`` -> ``"orderCompleted"``."""
    words = split_words(text)
    if not words:
        return ""
    return words[0].lower() + "".join(_capitalize(word) for word in words[1:])


CASES: dict[Case, Callable[[str], str]] = {
    "lower": lowercase,
    "upper": uppercase,
    "title": titlecase,
    "snake": snakecase,
    "kebab": kebabcase,
    "camel": camelcase,
}


def to_case(text: str, case: Case) -> str:
    """Convert ``text`` to ``case``."""
    return CASES[case](text)
