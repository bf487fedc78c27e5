"""The job search's time filter, seeking: a search for jobs created in a time range reads only the ids of each
table in which they are (a binary search over the primary keys finds them), so it starts right at the range's
end, not at the newest job paging back window after window, and stops where the range begins."""

from __future__ import annotations

from dataclasses import replace

from pgqd.ops.browse import IdBounds, JobFilter, JobPage
from pgqd.ops.seek import id_bounds
from pgqd.web.app import WebState


async def seek_to_time(state: WebState, where: JobFilter) -> IdBounds:
    return await id_bounds(state.pool, state.settings.names, where.created_from, where.created_until)


def within(bounds: IdBounds, page: JobPage) -> JobPage:
    """``page`` without its link to older jobs when no older one is in the bounds."""
    if page.next_before is not None and page.next_before <= min(bounds.live_from, bounds.log_from):
        return replace(page, next_before=None, window_edge=None)
    return page
