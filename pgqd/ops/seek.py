"""Where a creation time falls in the job search's id order (SQL in ``pgqd.sql.seek``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from pgqd.identifiers import Names
from pgqd.models import MAX_JOB_ID
from pgqd.ops.browse import IdBounds
from pgqd.sql import render
from pgqd.sql.seek import CREATED_CURSORS, LIVE_DEDUPE_KEY_IDS


async def created_cursors(db: Any, names: Names, moment: datetime) -> tuple[int | None, int | None]:
    """The first ids, in the jobs table and in the log, from which on jobs were created at ``moment`` or later
    (None for an empty table)."""
    row = await db.fetchrow(render(CREATED_CURSORS, names), moment)
    return row["live"], row["finished"]


async def id_bounds(db: Any, names: Names, since: datetime | None, until: datetime | None) -> IdBounds:
    """The ids of each table between which the jobs created in [``since``, ``until``) are."""
    bounds = IdBounds()
    if until is not None:
        live, finished = await created_cursors(db, names, until)
        bounds = replace(bounds, live_until=_or(live, 0), log_until=_or(finished, 0))
    if since is not None:
        live, finished = await created_cursors(db, names, since)
        bounds = replace(bounds, live_from=_or(live, MAX_JOB_ID), log_from=_or(finished, MAX_JOB_ID))
    return bounds


async def with_dedupe_key(db: Any, names: Names, bounds: IdBounds, key: str) -> IdBounds:
    """``bounds`` narrowed, in the jobs table, to the live jobs with dedupe key ``key`` (found by index, so a
    live job is found whatever its age; the log has no such index and keeps its bounds)."""
    row = await db.fetchrow(render(LIVE_DEDUPE_KEY_IDS, names), key)
    if row["first"] is None:
        return replace(bounds, live_until=0)
    return replace(
        bounds, live_from=max(bounds.live_from, row["first"]), live_until=min(bounds.live_until, row["last"] + 1)
    )


def _or(cursor: int | None, empty: int) -> int:
    """An empty table's cursor (None) as a bound that reads nothing from it."""
    return empty if cursor is None else cursor
