"""Where a creation time falls in the job search's id order (SQL in ``pgqd.sql.seek``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgqd.identifiers import Names
from pgqd.sql import render
from pgqd.sql.seek import CREATED_CURSORS


async def created_cursors(db: Any, names: Names, moment: datetime) -> tuple[int | None, int | None]:
    """The first ids, in the jobs table and in the log, from which on jobs were created at ``moment`` or later
    (None for an empty table)."""
    row = await db.fetchrow(render(CREATED_CURSORS, names), moment)
    return row["live"], row["finished"]


async def seek_before(db: Any, names: Names, until: datetime) -> int | None:
    """A job search cursor (``before``) at which the jobs created before ``until`` start, newest first."""
    cursors = [c for c in await created_cursors(db, names, until) if c is not None]
    return max(cursors) if cursors else None


async def seek_floor(db: Any, names: Names, since: datetime) -> int | None:
    """An id below which every job was created before ``since``: a search for jobs created since then can stop
    there."""
    cursors = [c for c in await created_cursors(db, names, since) if c is not None]
    return min(cursors) if cursors else None
