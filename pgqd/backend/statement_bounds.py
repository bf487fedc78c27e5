"""The bound on each statement of a connection outside the daemon (a command of the command line, the MCP
server), and what to tell a person when a statement passes it.

The server cancels a statement at its ``statement_timeout``: a lock held by another session, or a server too busy
to finish in time. A server that sends nothing at all (its host hangs, its link is gone) cannot cancel anything,
so the client also stops waiting a little later (``NO_ANSWER_MARGIN``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.backend.driver_errors import causes_of, own_sqlstate
from pgqd.units import format_duration

NO_ANSWER_MARGIN = 2.0
SHORTEST = 0.001  # PostgreSQL counts statement_timeout in milliseconds; less would round to 0, no limit
_QUERY_CANCELED = "57014"


@dataclass(frozen=True)
class StatementBounds:
    """What a connection is opened with so that each statement ends within ``seconds`` (0: no limit)."""

    seconds: float

    @property
    def server_settings(self) -> dict[str, str]:
        return DatabaseTimeouts(command=self.seconds).server_settings if self.seconds else {}

    @property
    def client_timeout(self) -> float | None:
        """asyncpg's ``command_timeout``: the server's own cancel comes first."""
        return self.seconds + NO_ANSWER_MARGIN if self.seconds else None


def _by_statement_timeout(error: BaseException) -> bool:
    # A statement timeout and a cancel by pg_cancel_backend share their SQLSTATE; only the server's words tell them
    # apart, and those are in the language of its lc_messages. So a cancel is taken for the timeout unless it says,
    # in English, that someone asked for it: a timeout is then told as one whatever the server's language, and only
    # an operator's cancel on a server that does not speak English is mistaken for one (its words are shown).
    return own_sqlstate(error) == _QUERY_CANCELED and "due to user request" not in str(error)


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` says that a statement was not answered in time: the server cancelled it at its
    statement_timeout, or the client stopped waiting for an answer."""
    return any(_by_statement_timeout(e) or isinstance(e, TimeoutError) for e in causes_of(exc))


def no_answer(exc: BaseException, within: float, where: str = "") -> str:
    """What to tell a person about ``exc`` (``timed_out``) when the bound was ``within`` seconds."""
    server = next((str(e) for e in causes_of(exc) if _by_statement_timeout(e)), "")
    said = f"the server said: {server}" if server else "no answer came at all"
    return (
        f"the database did not answer within {format_duration(within)} ({f'{where}; ' if where else ''}{said}). "
        "Another session may hold a lock this waits for (pg_stat_activity shows it), or the server is overloaded "
        "or out of reach."
    )
