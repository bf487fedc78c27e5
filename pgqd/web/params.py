"""Request parameters and form fields, checked before anything reaches the database.

Each check names the parameter and says what it accepts; the pages answer a ``ParamProblem`` with a 400 and its
message. Whatever the client sends (out-of-range numbers, dates at the calendar's edges, NUL bytes, names
the client library refuses, megabytes of text), it becomes a message here, never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pgqd.identifiers import MAX_ENTRYPOINT_NAME, entrypoint_name_problem
from pgqd.models import MAX_JOB_ID

MAX_TEXT = 200


class ParamProblem(ValueError):
    """A parameter that cannot be used; the message names it."""


def text(name: str, value: object, limit: int = MAX_TEXT) -> str | None:
    """A free text (empty: None): at most ``limit`` characters, no NUL (PostgreSQL's text cannot hold one)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParamProblem(f"{name}: give it once")
    if len(value) > limit:
        raise ParamProblem(f"{name}: at most {limit} characters")
    if "\x00" in value:
        raise ParamProblem(f"{name}: must not contain a NUL character")
    return value


def entrypoint(name: str, value: object) -> str | None:
    """An entrypoint's name (empty: None), by the rule config files follow."""
    given = text(name, value, limit=MAX_ENTRYPOINT_NAME)
    if given is None:
        return None
    problem = entrypoint_name_problem(given)
    if problem is not None:
        raise ParamProblem(f"{name}: {problem}")
    return given


def job_id(name: str, value: object, what: str = "a job id") -> int | None:
    """A job id, or another bigint id (empty: None): ASCII digits, 1 to 2**63 - 1."""
    given = text(name, value, limit=40)
    if given is None:
        return None
    if not (given.isascii() and given.isdigit()) or not 0 < int(given) <= MAX_JOB_ID:
        raise ParamProblem(f"{name}: {given[:40]!r} is not {what} (a whole number from 1 to {MAX_JOB_ID})")
    return int(given)


def job_ids(name: str, value: object, limit: int = 10_000) -> list[int]:
    """Repeated job ids (a form's ticked boxes), without duplicates."""
    values = value if isinstance(value, list) else [] if value is None else [value]
    if len(values) > limit:
        raise ParamProblem(f"{name}: at most {limit:,} jobs at a time")
    ids = [job_id(name, v) for v in values]
    return list(dict.fromkeys(i for i in ids if i is not None))


def moment(name: str, value: object) -> datetime | None:
    """A date and time (empty: None), ISO 8601; without a zone it is UTC, as the pages show times."""
    given = text(name, value, limit=64)
    if given is None:
        return None
    try:
        parsed = datetime.fromisoformat(given)
        # A browser's datetime-local field has no zone; the pages show UTC, so that is what it means.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        # OverflowError: a time at the calendar's edge whose offset takes it past year 1 or 9999 in UTC.
        raise ParamProblem(
            f"{name}: {given!r} is not a date and time such as 2026-05-01T14:30 (years 1 to 9999, in UTC)"
        ) from None


def choice(name: str, value: object, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    given = text(name, value, limit=64)
    if given is None:
        return default
    if given not in allowed:
        raise ParamProblem(f"{name}: unknown {name} {given[:64]!r}: use one of {', '.join(allowed)}")
    return given
