"""pgqd's statements use PostgreSQL's own ``$1`` placeholders, which asyncpg takes as they are. DB-API drivers
are given the same text with the placeholders rewritten into their ``paramstyle``, once per statement and
style. ``psycopg_binary`` is psycopg 3's ``%(name)b``, which sends the value in binary format."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pgqd.errors import PgqdError

_PLACEHOLDER = re.compile(r"\$(\d+)")

# Styles whose placeholders name a parameter (a mapping is passed) rather than take the next one in order.
_NAMED = {"pyformat": "%(p{n})s", "psycopg_binary": "%(p{n})b", "named": ":p{n}"}
_POSITIONAL = {"format": "%s", "qmark": "?"}
# Styles in which a literal % must be doubled.
_PERCENT_STYLES = ("pyformat", "psycopg_binary", "format")


class Translated(NamedTuple):
    sql: str
    style: str
    # For positional styles: the 0-based argument behind each placeholder, in order of appearance.
    order: tuple[int, ...]


@functools.lru_cache(maxsize=512)
def translate(sql: str, paramstyle: str) -> Translated:
    """``sql`` with its ``$n`` placeholders written in ``paramstyle`` (a DB-API paramstyle name)."""
    if paramstyle in ("numeric_dollar", "numeric"):
        text = sql if paramstyle == "numeric_dollar" else _PLACEHOLDER.sub(r":\1", sql)
        return Translated(text, paramstyle, ())
    if paramstyle not in _NAMED and paramstyle not in _POSITIONAL:
        raise PgqdError(f"the database driver's parameter style {paramstyle!r} is not supported")
    text = sql.replace("%", "%%") if paramstyle in _PERCENT_STYLES else sql
    order: list[int] = []

    def placeholder(match: re.Match[str]) -> str:
        n = int(match[1])
        if paramstyle in _NAMED:
            return _NAMED[paramstyle].format(n=n)
        order.append(n - 1)
        return _POSITIONAL[paramstyle]

    return Translated(_PLACEHOLDER.sub(placeholder, text), paramstyle, tuple(order))


def bind(sql: str, args: Sequence[Any], paramstyle: str) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    """The statement text and parameters to hand to a driver's ``execute`` in ``paramstyle``."""
    translated = translate(sql, paramstyle)
    if paramstyle in _NAMED:
        return translated.sql, {f"p{n}": value for n, value in enumerate(args, start=1)}
    if translated.order:
        return translated.sql, tuple(args[i] for i in translated.order)
    return translated.sql, tuple(args)
