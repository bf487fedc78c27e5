"""The job search's time filter, seeking: a search for jobs created before a time starts right there (not at
the newest job, paging back window after window), and one for jobs created since a time stops where they end."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pgqd.ops.browse import JobFilter, JobPage
from pgqd.ops.seek import seek_before, seek_floor
from pgqd.web.app import WebState


@dataclass(frozen=True)
class Seek:
    before: int | None
    # No job below this id was created in the filter's range (None: not known).
    floor: int | None

    def bounded(self, page: JobPage) -> JobPage:
        """``page`` without its link to older jobs when every older one was created before the range."""
        if self.floor is not None and page.next_before is not None and page.next_before <= self.floor:
            return replace(page, next_before=None, window_edge=None)
        return page


async def seek_to_time(state: WebState, where: JobFilter, before: int | None) -> Seek:
    names = state.settings.names
    if before is None and where.created_until is not None:
        before = await seek_before(state.pool, names, where.created_until)
    floor = None if where.created_from is None else await seek_floor(state.pool, names, where.created_from)
    return Seek(before, floor)
