"""The job search: live and finished jobs matching a filter, newest first, in pages of bounded cost.

Read-only, on an asyncpg connection or pool, like ``pgqd.ops.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgqd.identifiers import Names
from pgqd.models import FINAL_STATUSES, LIVE_STATUSES, MAX_JOB_ID
from pgqd.sql import browse, render

# Live states with a small partial index of their own, searched without a read window.
INDEXED_STATUSES = ("failed", "picked", "suspect")
# Status filters besides single statuses: every live job, or every finished one.
STATUS_GROUPS = ("live", "finished")
# The job search reads at most this many of the newest rows of each table per page.
SEARCH_WINDOW = 20_000


@dataclass(frozen=True)
class JobFilter:
    """What the job search looks for; every field is optional."""

    entrypoint: str | None = None
    status: str | None = None  # a live or final status, "live", "finished", or None for all
    created_from: datetime | None = None
    created_until: datetime | None = None
    text: str | None = None  # in the payload or the error, case-insensitive
    dedupe_key: str | None = None  # exactly
    # A header's name and value, exactly (finished jobs keep no headers, so this finds live jobs only).
    header: tuple[str, str] | None = None
    # Finished between (only finished jobs match): the log is read only in the partitions of these days.
    finished_from: datetime | None = None
    finished_until: datetime | None = None

    def __post_init__(self) -> None:
        allowed = (*LIVE_STATUSES, *FINAL_STATUSES, *STATUS_GROUPS)
        if self.status is not None and self.status not in allowed:
            raise ValueError(f"unknown status {self.status!r}: use one of {', '.join(allowed)}")

    def live_filter_args(self) -> tuple[Any, ...]:
        """Parameters $2 to $9 of ``pgqd.sql.browse.LIVE_FILTER``: entrypoint, created between, the text as
        LIKE patterns for error text and for payloads in "escape" encoding, the dedupe key, a header's name and
        value."""
        text = like_pattern(self.text) if self.text else None
        payload = like_pattern(escape_encoded(self.text)) if self.text else None
        name, value = self.header if self.header is not None else (None, None)
        return self.entrypoint, self.created_from, self.created_until, text, payload, self.dedupe_key, name, value


@dataclass(frozen=True)
class IdBounds:
    """The ids worth reading in each table, [from, until): outside them, no job was created in the filter's
    time range."""

    live_from: int = 0
    live_until: int = MAX_JOB_ID
    log_from: int = 0
    log_until: int = MAX_JOB_ID


@dataclass(frozen=True)
class JobPage:
    """One page of the job search, newest first. ``next_before`` continues it (None: nothing older);
    ``window_edge`` is set when the search stopped at its read window rather than at the end of the tables."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_before: int | None = None
    window_edge: int | None = None


def like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, with LIKE's own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def escape_encoded(text: str) -> str:
    """``text`` as PostgreSQL's ``encode(bytes, 'escape')`` writes its UTF-8 bytes: backslashes doubled, zero
    and high-bit bytes as octal. Payloads are bytes; searching their escape encoding finds UTF-8 text in any."""
    out = []
    for byte in text.encode("utf-8"):
        if byte == 0x5C:
            out.append("\\\\")
        elif byte == 0 or byte >= 0x80:
            out.append(f"\\{byte:03o}")
        else:
            out.append(chr(byte))
    return "".join(out)


class JobSearch:
    """The statements of ``pgqd.sql.browse`` for one install."""

    def __init__(self, db: Any, names: Names) -> None:
        self.db = db
        self.names = names

    async def page(
        self,
        where: JobFilter,
        before: int | None = None,
        limit: int = 50,
        window: int = SEARCH_WINDOW,
        bounds: IdBounds | None = None,
    ) -> JobPage:
        """Up to ``limit`` jobs below the id ``before``, newest first, reading only the ids within ``bounds``
        (those the filter's creation times leave, see ``pgqd.ops.seek``)."""
        bounds = bounds or IdBounds()
        cursor = MAX_JOB_ID if before is None else before
        if where.status in INDEXED_STATUSES:
            statement = browse.SEARCH_LIVE_STATUS[where.status]
            rows = await self.db.fetch(render(statement, self.names), cursor, *where.live_filter_args(), limit)
        else:
            _, _, _, text, payload, dedupe_key, header_name, header_value = where.live_filter_args()
            finished = where.status in FINAL_STATUSES or where.status == "finished"
            live = where.status in LIVE_STATUSES or where.status == "live"
            by_finish = where.finished_from is not None or where.finished_until is not None
            rows = await self.db.fetch(
                render(browse.SEARCH_JOBS, self.names),
                cursor,
                window,
                (where.status is None or live) and not by_finish,
                where.status is None or finished,
                where.entrypoint,
                where.status if where.status not in STATUS_GROUPS else None,
                where.created_from,
                where.created_until,
                text,
                payload,
                limit,
                dedupe_key,
                header_name,
                header_value,
                bounds.live_from,
                bounds.live_until,
                bounds.log_from,
                bounds.log_until,
                where.finished_from,
                where.finished_until,
            )
        edge = rows[0]["edge"] if rows else None
        found = [{k: v for k, v in r.items() if k != "edge"} for r in rows if r["id"] is not None]
        if len(found) >= limit:
            return JobPage(found, found[-1]["id"], None)
        return JobPage(found, edge, edge)
