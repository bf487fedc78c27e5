"""Query parameters of the job search, checked: a status from the allowed list, times, a page size."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pgqd.browse import JobFilter

PAGE_SIZES = (25, 50, 100, 200)
MAX_TEXT = 200


class FilterProblem(ValueError):
    """A query parameter that cannot be used; the message names it."""


def _moment(name: str, text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterProblem(f"{name}: {text!r} is not a date and time such as 2026-05-01T14:30") from None
    # A browser's datetime-local field has no zone; the pages show UTC, so that is what it means.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def job_filter(query: Mapping[str, str]) -> JobFilter:
    text = query.get("q") or None
    if text is not None and len(text) > MAX_TEXT:
        raise FilterProblem(f"q: at most {MAX_TEXT} characters")
    try:
        return JobFilter(
            entrypoint=query.get("entrypoint") or None,
            status=query.get("status") or None,
            created_from=_moment("from", query.get("from")),
            created_until=_moment("until", query.get("until")),
            text=text,
        )
    except ValueError as exc:
        if isinstance(exc, FilterProblem):
            raise
        raise FilterProblem(f"status: {exc}") from None


def page_size(query: Mapping[str, str]) -> int:
    text = query.get("limit") or "50"
    if not text.isdigit() or int(text) not in PAGE_SIZES:
        raise FilterProblem(f"limit: use one of {', '.join(map(str, PAGE_SIZES))}")
    return int(text)
