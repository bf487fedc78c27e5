"""Query parameters of the job search, checked: a status from the allowed list, times, a page size."""

from __future__ import annotations

from collections.abc import Mapping

from pgqd.identifiers import MAX_ENTRYPOINT_NAME
from pgqd.models import FINAL_STATUSES
from pgqd.ops.browse import LIVE_STATUSES, STATUS_GROUPS, JobFilter
from pgqd.web import params
from pgqd.web.params import ParamProblem

PAGE_SIZES = (25, 50, 100, 200)
STATUS_CHOICES = (*STATUS_GROUPS, *LIVE_STATUSES, *FINAL_STATUSES)
# The name this module's callers know the problem by.
FilterProblem = ParamProblem


def job_filter(query: Mapping[str, object]) -> JobFilter:
    return JobFilter(
        entrypoint=params.text("entrypoint", query.get("entrypoint"), MAX_ENTRYPOINT_NAME),
        status=params.choice("status", query.get("status"), STATUS_CHOICES),
        created_from=params.moment("from", query.get("from")),
        created_until=params.moment("until", query.get("until")),
        text=params.text("q", query.get("q")),
    )


def page_size(query: Mapping[str, str]) -> int:
    text = query.get("limit") or "50"
    if not text.isascii() or not text.isdigit() or len(text) > 4 or int(text) not in PAGE_SIZES:
        raise FilterProblem(f"limit: use one of {', '.join(map(str, PAGE_SIZES))}")
    return int(text)
