"""Every command of the command line waits for the database's answers for a bounded time (--db-timeout), and
says why when none comes: a lock held by another session, or a server that stopped answering."""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import time
from typing import Any

import asyncpg
import pytest

from pgqd.backend.statement_bounds import no_answer, timed_out
from pgqd.cli import build_parser
from pgqd.cli.connect import connection
from pgqd.errors import BackendUnavailable
from pgqd.sql import bulk
from tests.support.cli import PGQD, run_pgqd
from tests.support.tcp_proxy import TcpProxy

# Each command with the table its first statement waits for when another session locks it.
COMMANDS = {
    "jobs list": (("jobs", "list"), "pgqd_jobs"),
    "jobs failed": (("jobs", "failed"), "pgqd_jobs"),
    "enqueue": (("enqueue", "send_email", '{"to": "a@example.com"}'), "pgqd_jobs"),
    "schedules": (("schedules",), "pgqd_schedules"),
    "jobs requeue": (("jobs", "requeue", "1"), "pgqd_jobs"),
    "jobs cancel": (("jobs", "cancel", "1"), "pgqd_jobs"),
    "jobs show": (("jobs", "show", "1"), "pgqd_jobs"),
    "pause": (("pause", "send_email"), "pgqd_entrypoint_pauses"),
    "resume": (("resume", "send_email"), "pgqd_entrypoint_pauses"),
    "paused": (("paused",), "pgqd_entrypoint_pauses"),
    "dashboard": (("dashboard", "--once"), "pgqd_jobs"),
    "uninstall": (("uninstall",), "pgqd_jobs"),
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


async def test_an_operators_cancel_is_told_as_such_and_not_as_a_timeout(conn: Any, db_dsn: str) -> None:
    command = [PGQD, "jobs", "list", "--dsn", db_dsn, "--db-timeout", "60s"]
    async with conn.transaction():
        await conn.execute("LOCK TABLE pgqd_jobs IN ACCESS EXCLUSIVE MODE")
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as listing:
            try:
                waiting = """SELECT pid FROM pg_stat_activity
                             WHERE application_name = 'pgqd-cli' AND wait_event_type = 'Lock'"""
                deadline = time.monotonic() + 20
                while (pid := await conn.fetchval(waiting)) is None:
                    assert time.monotonic() < deadline, "the command never waited on the lock"
                    await asyncio.sleep(0.05)
                    # Within a transaction the activity is read once and kept: look again.
                    await conn.execute("SELECT pg_stat_clear_snapshot()")
                assert await conn.fetchval("SELECT pg_cancel_backend($1)", pid)
                _, said = listing.communicate(timeout=20)
            finally:
                listing.kill()
    assert listing.returncode == 1
    assert "canceling statement due to user request" in said
    assert "did not answer" not in said
    assert "Traceback" not in said


@pytest.mark.parametrize(
    ("words", "a_timeout"),
    [
        ("canceling statement due to statement timeout", True),
        ("storniere Anfrage wegen Zeitüberschreitung der Anfrage", True),  # lc_messages = 'de_DE.UTF-8'
        ("canceling statement due to user request", False),
    ],
)
def test_a_statement_timeout_is_told_as_one_whatever_the_servers_language(words: str, a_timeout: bool) -> None:
    cancelled = asyncpg.QueryCanceledError(words)
    assert timed_out(cancelled) is a_timeout
    if a_timeout:
        assert f"(here; the server said: {words})" in no_answer(cancelled, 1.0, "here")


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
    # An uninstall drops the tables in one transaction: it must not queue the whole fleet behind it for ever.
    assert parser.parse_args(["uninstall"]).db_timeout == 30.0
    # It connects to nothing.
    assert not hasattr(parser.parse_args(["grants", "--worker-role", "w"]), "db_timeout")


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("soon", "invalid duration 'soon'"),
        ("0.5ms", "'0.5ms' is shorter than 1ms: give 1ms or more, or 0 for no limit"),
    ],
)
def test_a_db_timeout_that_is_no_duration_is_refused_by_name(given: str, problem: str) -> None:
    done = run_pgqd("jobs", "list", "--db-timeout", given, "--dsn", "postgresql://postgres@127.0.0.1:1/none")
    assert done.returncode == 2
    assert f"argument --db-timeout: {problem}" in done.stderr


async def test_the_live_dashboard_says_the_database_did_not_answer_and_looks_again(conn: Any, db_dsn: str) -> None:
    command = [PGQD, "dashboard", "--dsn", db_dsn, "--db-timeout", "1s", "--interval", "0.2", "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as dashboard:
        try:
            assert "queues" in json.loads(next_line(dashboard))
            async with conn.transaction():
                await conn.execute("LOCK TABLE pgqd_jobs IN ACCESS EXCLUSIVE MODE")
                while "error" not in (shown := json.loads(next_line(dashboard))):
                    pass
            assert shown["error"].startswith("the database did not answer within 1s")
            while "error" in json.loads(next_line(dashboard)):
                pass  # answers again once the lock is gone
            assert dashboard.poll() is None
        finally:
            dashboard.terminate()


def next_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The process's next line of output, within ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output within {timeout}s"
    line = process.stdout.readline()
    assert line, f"the process ended: {process.stderr.read() if process.stderr else ''}"
    return line


async def test_a_requeue_of_every_held_job_goes_a_batch_per_statement(conn: Any, db_dsn: str) -> None:
    held = 2 * bulk.BATCH + 5
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, status) SELECT 'mail', 'failed' FROM generate_series(1, $1)", held
    )
    done = run_pgqd("jobs", "requeue", "--all-failed", "--dsn", db_dsn, "--db-timeout", "10s", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"requeued {held} job(s)")
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'queued'") == held


def test_a_database_without_pgqd_is_named_as_such(db_dsn: str) -> None:
    done = run_pgqd("jobs", "list", "--dsn", db_dsn, "--prefix", "elsewhere_")
    assert done.returncode == 1
    assert 'UndefinedTableError: relation "public.elsewhere_jobs" does not exist' in done.stderr
    assert "pgqd is not installed there, or under another schema or prefix (--schema, --prefix)" in done.stderr
    assert "Traceback" not in done.stderr
