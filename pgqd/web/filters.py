"""Query parameters of the job search, checked: a status from the allowed list, times, a page size."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pgqd.ops.browse import JobFilter

PAGE_SIZES = (25, 50, 100, 200)
# The job search form's fields, as query parameters.
FILTER_FIELDS = ("entrypoint", "status", "q", "key", "header", "from", "until", "limit")
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


def _text(query: Mapping[str, str], name: str) -> str | None:
    text = query.get(name) or None
    if text is not None and len(text) > MAX_TEXT:
        raise FilterProblem(f"{name}: at most {MAX_TEXT} characters")
    if text is not None and "\x00" in text:
        raise FilterProblem(f"{name}: no NUL characters")
    return text


def _header(text: str | None) -> tuple[str, str] | None:
    """``name=value``, the value exactly as the header has it (a JSON number or boolean as its JSON text)."""
    if text is None:
        return None
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise FilterProblem(f"header: {text!r} is not name=value")
    return name.strip(), value


def job_filter(query: Mapping[str, str]) -> JobFilter:
    text = _text(query, "q")
    try:
        return JobFilter(
            entrypoint=query.get("entrypoint") or None,
            status=query.get("status") or None,
            created_from=_moment("from", query.get("from")),
            created_until=_moment("until", query.get("until")),
            text=text,
            dedupe_key=_text(query, "key"),
            header=_header(_text(query, "header")),
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
