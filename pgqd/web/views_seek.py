"""The job search's seeking: a search for jobs created in a time range reads only the ids of each table in
which they are (a binary search over the primary keys finds them), so it starts right at the range's end, not
at the newest job paging back window after window, and stops where the range begins. A live job with a given
dedupe key is found by index, whatever its age."""

from __future__ import annotations

from dataclasses import replace

from pgqd.ops.browse import IdBounds, JobFilter, JobPage
from pgqd.ops.seek import id_bounds, with_dedupe_key
from pgqd.web.state import WebState


async def seek_to_time(state: WebState, where: JobFilter) -> IdBounds:
    """The ids worth reading for ``where``: those of its time range, and of the live jobs with its dedupe key."""
    names = state.settings.names
    bounds = await id_bounds(state.pool, names, where.created_from, where.created_until)
    if where.dedupe_key is not None:
        bounds = await with_dedupe_key(state.pool, names, bounds, where.dedupe_key)
    return bounds


def within(bounds: IdBounds, page: JobPage) -> JobPage:
    """``page`` without its link to older jobs when no older one is in the bounds."""
    if page.next_before is not None and page.next_before <= min(bounds.live_from, bounds.log_from):
        return replace(page, next_before=None, window_edge=None)
    return page
