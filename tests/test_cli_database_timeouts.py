"""Every command of the command line waits for the database's answers for a bounded time (--db-timeout), and
says why when none comes: a lock held by another session, or a server that stopped answering."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pgqd.cli import build_parser
from pgqd.cli.connect import connection
from pgqd.errors import BackendUnavailable
from tests.support.cli import run_pgqd
from tests.support.tcp_proxy import TcpProxy

# Each command with the table its first statement waits for when another session locks it.
COMMANDS = {
    "jobs list": (("jobs", "list"), "pgqd_jobs"),
    "jobs failed": (("jobs", "failed"), "pgqd_jobs"),
    "enqueue": (("enqueue", "send_email", '{"to": "a@example.com"}'), "pgqd_jobs"),
    "schedules": (("schedules",), "pgqd_schedules"),
    "pause": (("pause", "send_email"), "pgqd_entrypoint_pauses"),
    "dashboard": (("dashboard", "--once"), "pgqd_jobs"),
}


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_command_that_waits_on_a_lock_ends_at_its_db_timeout_and_says_why(
    conn: Any, db_dsn: str, command: str
) -> None:
    args, table = COMMANDS[command]
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        done = run_pgqd(*args, "--dsn", db_dsn, "--db-timeout", "1s", timeout=60)
    assert done.returncode == 1, done.stdout
    assert "pgqd: the database did not answer within 1s" in done.stderr
    assert "the server said: canceling statement due to statement timeout" in done.stderr
    assert "Another session may hold a lock" in done.stderr
    assert "--db-timeout sets the wait" in done.stderr
    assert "Traceback" not in done.stderr
    # Nothing was done by halves: the enqueue and the pause were cancelled whole.
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
    assert await conn.fetchval("SELECT count(*) FROM pgqd_entrypoint_pauses") == 0


async def test_a_command_whose_server_stops_answering_ends_at_its_db_timeout(db_dsn: str) -> None:
    """A server that sends nothing at all (its host hangs; the sockets stay open) cannot cancel the statement
    itself: the client gives up on it shortly after the bound, and closes the connection without waiting."""
    with TcpProxy.for_dsn(db_dsn) as proxy:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"did not answer within 1s \(.*; no answer came at all\)"):
            async with connection(proxy.route(db_dsn), db_timeout=1.0) as conn:
                proxy.freeze()
                await conn.fetchval("SELECT 1")
        # Loose: it tells the bound (and the close's own) from a hang.
        assert time.monotonic() - started < 20


async def test_the_bound_is_the_server_statement_timeout_30s_by_default_and_0_lifts_it(db_dsn: str) -> None:
    async with connection(db_dsn) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "30s"
    async with connection(db_dsn, db_timeout=0) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "0"
    parser = build_parser()
    assert parser.parse_args(["jobs", "list", "--db-timeout", "2m"]).db_timeout == 120.0
    assert parser.parse_args(["jobs", "list", "--db-timeout", "0"]).db_timeout == 0.0
    assert parser.parse_args(["schedules"]).db_timeout == 30.0
    # Migrations may rewrite big tables, and an install waits for another one under way.
    assert parser.parse_args(["install"]).db_timeout == 0.0
    assert parser.parse_args(["upgrade"]).db_timeout == 0.0


def test_a_db_timeout_that_is_no_duration_is_refused_by_name() -> None:
    done = run_pgqd("jobs", "list", "--db-timeout", "soon", "--dsn", "postgresql://postgres@127.0.0.1:1/none")
    assert done.returncode == 2
    assert "argument --db-timeout: invalid duration 'soon'" in done.stderr
