"""Warehouse identifiers the way Segment makes them: snake_case, legal, bounded.

Segment's warehouse connector names every schema, table and column with the snake_case of the
source, event or property name (its ``go-snakecase`` package), and prepends ``_`` to a name
that is a reserved word. We match both, so queries written against a Segment warehouse run
unchanged here:

- only ASCII letters and digits survive; every other character separates words and is
  dropped (``"Order Completed"`` -> ``order_completed``, ``"FOO:BAR$BAZ"`` -> ``foo_bar_baz``,
  ``"•¶§foo"`` -> ``foo``);
- an uppercase letter starts a new word, a run of capitals and digits is one word
  (``inviteYourCustomers`` -> ``invite_your_customers``, ``SAMPLE 2 TEXT`` -> ``sample_2_text``);
- a name that is a reserved SQL word in PostgreSQL or DuckDB, or starts with a digit, gets a
  leading ``_`` (``order`` -> ``_order``, ``3d_secure`` -> ``_3d_secure``), so every name is a
  legal unquoted identifier;
- names are cut to 63 characters, PostgreSQL's limit (DuckDB uses the same, so one event gets
  the same columns on both backends); two names that agree on their first 63 characters share
  a column;
- a name with no ASCII letter or digit at all (``"注文"``) gets ``_`` and 8 hex digits of its
  SHA-1, stable across loads.

Nested objects are flattened by joining the snake_case of each key with ``_``
(``context.page.path`` -> ``context_page_path``).
"""

from __future__ import annotations

import functools
import hashlib

#: PostgreSQL's longest identifier (NAMEDATALEN - 1 bytes; our names are ASCII).
MAX_IDENTIFIER = 63

#: Words neither backend takes as an unquoted table or column name: PostgreSQL 15's reserved
#: and type/function-name keywords (``pg_get_keywords()`` categories R and T), DuckDB's
#: reserved and type/function keywords (``duckdb_keywords()``), and PostgreSQL's system
#: column names, which no user column may take.
_RESERVED_TEXT = """
    all analyse analyze and anti any array as asc asof asymmetric at authorization binary
    both by case cast check collate collation column columns concurrently constraint create
    cross current_catalog current_date current_role current_schema current_time
    current_timestamp current_user default deferrable desc describe distinct do else end
    except false fetch for foreign freeze from full generated glob grant group having ilike
    in initially inner intersect into is isnull join lambda lateral leading left like limit
    localtime localtimestamp map natural not notnull null offset on only or order outer
    overlaps pivot pivot_longer pivot_wider placing positional primary qualify references
    returning right select semi session_user show similar some struct summarize symmetric
    table tablesample then to trailing true try_cast tuple union unique unpack unpivot user
    using variadic verbose when where window with
    oid tableoid xmin xmax cmin cmax ctid
"""
RESERVED_WORDS = frozenset(_RESERVED_TEXT.split())


def _lower(char: str) -> bool:
    return "a" <= char <= "z"


def _upper(char: str) -> bool:
    return "A" <= char <= "Z"


def _digit(char: str) -> bool:
    return "0" <= char <= "9"


@functools.lru_cache(maxsize=16_384)
def snakecase(text: str) -> str:
    """Segment's snake_case (go-snakecase's rules, character for character)."""
    size = len(text)
    start = 0
    # Already snake_case up to here: lowercase letters, digits, and underscores followed by one.
    while start < size:
        char = text[start]
        # An underscore stays only when a lowercase letter or a digit follows it.
        if (
            _lower(char)
            or _digit(char)
            or (
                char == "_"
                and start + 1 < size
                and (_lower(text[start + 1]) or _digit(text[start + 1]))
            )
        ):
            start += 1
        else:
            break
    if start == size:
        return text
    if start > 0 and _digit(text[start - 1]):
        start -= 1  # a digit followed by a capital belongs to the capital's word
    out = [text[:start]]
    written = start
    index = start
    while index < size:
        char = text[index]
        if not (_lower(char) or _upper(char) or _digit(char)):
            index += 1
            continue
        if written:
            out.append("_")
        word_start = index
        while index < size and (_upper(text[index]) or _digit(text[index])):
            index += 1
        capitals = text[word_start:index].lower()
        rest_start = index
        while index < size and (_lower(text[index]) or _digit(text[index])):
            index += 1
        word = capitals + text[rest_start:index]
        out.append(word)
        written += len(word) + 1
    return "".join(out)


@functools.lru_cache(maxsize=65_536)
def identifier(snake: str, original: str = "") -> str:
    """A legal, bounded identifier from an already snake_cased name (see the module doc)."""
    if not snake:
        return "_" + hashlib.sha1(original.encode(), usedforsecurity=False).hexdigest()[:8]
    if _digit(snake[0]) or snake in RESERVED_WORDS:
        snake = "_" + snake
    return snake[:MAX_IDENTIFIER]


def name_for(text: str) -> str:
    """Schema, table or column name for a source id, event name or property name."""
    return identifier(snakecase(text), text)


def join(prefix: str, key: str) -> str:
    """The snake_case path of ``key`` under ``prefix`` (not yet made an identifier)."""
    part = snakecase(key)
    if not prefix:
        return part
    return f"{prefix}_{part}" if part else prefix


def quote(name: str) -> str:
    """A double-quoted SQL identifier (every name we emit is quoted, legal or not)."""
    return '"' + name.replace('"', '""') + '"'
