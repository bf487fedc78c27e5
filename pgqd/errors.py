"""Exceptions that pgqd raises to its users. Each message says what went wrong and what to do."""

from __future__ import annotations

from collections.abc import Sequence


class PgqdError(Exception):
    """Base class of every error pgqd raises on purpose."""


class ConfigError(PgqdError):
    """The configuration or a command-line argument is invalid."""


class IdentifierError(ConfigError):
    """A schema name or table prefix is not a plain SQL identifier."""


class SchemaVersionError(PgqdError):
    """The database schema is missing or older/newer than this version of pgqd expects."""


class DedupeConflict(PgqdError):
    """Enqueueing failed because live jobs already hold these dedupe keys; nothing of the batch was stored."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        shown = ", ".join(repr(k) for k in self.keys[:10])
        more = f" and {len(self.keys) - 10} more" if len(self.keys) > 10 else ""
        super().__init__(
            f"dedupe key(s) already held by a queued or running job: {shown}{more}; "
            'pass on_conflict="skip" or "raise_priority" to enqueue anyway'
        )


class UnknownParents(PgqdError):
    """A job was enqueued to wait for jobs that do not exist (or whose log rows retention already removed)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = tuple(ids)
        super().__init__(
            f"after= names job(s) that are neither live nor in the log: {', '.join(map(str, self.ids[:10]))}; "
            "nothing was enqueued"
        )


class JobNotFound(PgqdError):
    """No job, live or finished, has this id."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id}")


class BackendUnavailable(PgqdError):
    """The database could not be reached or dropped the connection; the operation may be retried."""


class ReadOnlyDatabase(BackendUnavailable):
    """The server refused a write because it is read-only: a hot standby (a replica, or a former primary that
    is now one), or a server with ``default_transaction_read_only``. Retried like an outage, since during a
    failover the server may become the primary a moment later, or a new connection may reach the one that is."""

    HINT = (
        "the server is read-only (a standby?): point the DSN at the primary, or list every member of the cluster "
        "with target_session_attrs=read-write (postgresql://h1:5432,h2:5432/db?target_session_attrs=read-write)"
    )

    def __init__(self, driver_message: str) -> None:
        super().__init__(f"database unavailable: {driver_message}; {self.HINT}")
