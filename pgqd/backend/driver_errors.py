"""What the drivers raise, in pgqd's terms: dedupe conflicts, an unusable connection, an aborted transaction.

asyncpg and psycopg 3 put the SQLSTATE on ``sqlstate``, psycopg2 on ``pgcode``; SQLAlchemy wraps the driver's
exception in ``orig`` (and its asyncpg adapter wraps it once more, as the ``__cause__``).
"""

from __future__ import annotations

import json

from pgqd.backend.bounded import READ_ONLY_SQLSTATE, is_transient
from pgqd.errors import BackendUnavailable, DedupeConflict, PgqdError, ReadOnlyDatabase, UnknownParents

DEDUPE_CONFLICT_SQLSTATE = "PGQ01"
UNKNOWN_PARENTS_SQLSTATE = "PGQ02"
_UNIQUE_VIOLATION = "23505"
_IN_FAILED_TRANSACTION = "25P02"
# The server went away, is starting or shutting down, is out of connections, or the connection broke.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")
# DB-API exception classes a driver raises, without a SQLSTATE, when the connection itself failed.
_CONNECTION_ERROR_NAMES = ("OperationalError", "InterfaceError")


def causes_of(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it wraps (SQLAlchemy's ``orig``, ``__cause__``), outermost first."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 5:
        found.append(current)
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return found


def own_sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE ``error`` itself carries, whichever driver raised it (not those of the errors it wraps)."""
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) and code else None


def sqlstate_of(exc: BaseException) -> str | None:
    return next((code for error in causes_of(exc) if (code := own_sqlstate(error))), None)


def detail_of(exc: BaseException) -> str:
    for error in causes_of(exc):
        detail = getattr(getattr(error, "diag", None), "message_detail", None) or getattr(error, "detail", None)
        if isinstance(detail, str) and detail:
            return detail
    return ""


def _key_from_detail(detail: str) -> str:
    # "Key (dedupe_key)=(abc) already exists."
    start, end = detail.find(")=("), detail.rfind(") already exists")
    return detail[start + 3 : end] if start >= 0 and end > start else detail


def translate_error(exc: BaseException) -> PgqdError | None:
    """The pgqd error that ``exc``, raised by a driver running a pgqd statement, stands for; None if it is
    not one pgqd knows better than the driver."""
    sqlstate = sqlstate_of(exc)
    if sqlstate == DEDUPE_CONFLICT_SQLSTATE:
        return DedupeConflict(json.loads(detail_of(exc) or "[]"))
    if sqlstate == UNKNOWN_PARENTS_SQLSTATE:
        return UnknownParents(json.loads(detail_of(exc) or "[]"))
    if sqlstate == _UNIQUE_VIOLATION and "dedupe_key" in detail_of(exc):
        return DedupeConflict([_key_from_detail(detail_of(exc))])
    if sqlstate == READ_ONLY_SQLSTATE:
        return ReadOnlyDatabase(_driver_message(exc))
    if sqlstate == _IN_FAILED_TRANSACTION:
        return PgqdError(
            "the transaction on this connection was aborted by an earlier error, and PostgreSQL refuses every "
            "statement until it is rolled back: roll back (or to a savepoint) first. The driver said: "
            f"{_driver_message(exc)}"
        )
    transient = (
        sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
        if sqlstate
        else any(is_transient(e) or type(e).__name__ in _CONNECTION_ERROR_NAMES for e in causes_of(exc))
    )
    if transient:
        return BackendUnavailable(f"database unavailable: {_driver_message(exc)}")
    return None


def _driver_message(exc: BaseException) -> str:
    innermost = causes_of(exc)[-1]
    return f"{type(innermost).__name__}: {str(innermost).strip()}"


def missing_extra(package: str, extra: str, needed_for: str) -> PgqdError:
    """The error for a target whose driver is not installed, naming the extra that installs it."""
    return PgqdError(f"{needed_for} needs the {package} package, which is not installed: pip install 'pgqd[{extra}]'")
