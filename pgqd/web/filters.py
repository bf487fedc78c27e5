"""Query parameters of the job search, checked: a status from the allowed list, times, texts, a page size."""

from __future__ import annotations

from collections.abc import Mapping

from pgqd.identifiers import MAX_ENTRYPOINT_NAME
from pgqd.models import FINAL_STATUSES, LIVE_STATUSES
from pgqd.ops.browse import STATUS_GROUPS, JobFilter
from pgqd.web import params
from pgqd.web.params import ParamProblem

PAGE_SIZES = (25, 50, 100, 200)
STATUS_CHOICES = (*STATUS_GROUPS, *LIVE_STATUSES, *FINAL_STATUSES)
# The job search form's fields, as query parameters.
FILTER_FIELDS = ("entrypoint", "status", "q", "key", "header", "from", "until", "limit")
# The name this module's callers know the problem by.
FilterProblem = ParamProblem


def _header(text: str | None) -> tuple[str, str] | None:
    """``name=value``, the value exactly as the header has it (a JSON number or boolean as its JSON text)."""
    if text is None:
        return None
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise FilterProblem(f"header: {text!r} is not name=value")
    return name.strip(), value


def job_filter(query: Mapping[str, object]) -> JobFilter:
    return JobFilter(
        entrypoint=params.text("entrypoint", query.get("entrypoint"), MAX_ENTRYPOINT_NAME),
        status=params.choice("status", query.get("status"), STATUS_CHOICES),
        created_from=params.moment("from", query.get("from")),
        created_until=params.moment("until", query.get("until")),
        text=params.text("q", query.get("q")),
        dedupe_key=params.text("key", query.get("key")),
        header=_header(params.text("header", query.get("header"))),
    )


def page_size(query: Mapping[str, str]) -> int:
    text = query.get("limit") or "50"
    if not text.isascii() or not text.isdigit() or len(text) > 4 or int(text) not in PAGE_SIZES:
        raise FilterProblem(f"limit: use one of {', '.join(map(str, PAGE_SIZES))}")
    return int(text)
