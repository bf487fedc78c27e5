"""Pausing and resuming entrypoints fleet-wide through the real daemon and the command line.

The engine's side (the claim honours the pause on both backends) is in test_behaviour.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgqd import Client, JobSpec
from tests.support.cli import run_pgqd
from tests.support.daemon import StartDaemon, daemon_config, free_port, http_get, wait_for
from tests.support.waiting import wait_until

TWO_ENTRYPOINTS = '\n[entrypoints.other]\nhandler = "tests.support.daemon_app:other"\n'


async def test_a_paused_entrypoint_stops_being_claimed_by_the_daemon_while_others_run_and_resume_restarts_it(
    db: Any, db_dsn: str, start_daemon: StartDaemon
) -> None:
    port = free_port()
    # A poll far longer than the test: after resume, only the wake-up notification can start the jobs in time.
    config = daemon_config(processes=2, metrics_port=port, extra=TWO_ENTRYPOINTS)
    start_daemon(config.replace('poll_interval = "1s"', 'poll_interval = "60s"')).wait_ready()
    client = Client(db)
    running = await client.enqueue("sleeper", "1.5")
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM test_runs"), timeout=20, what="the first job to start")
    # A backlog being worked through when the pause comes: 20 slots, 200 jobs of 0.3 s, about 3 s of work.
    backlog = await client.enqueue_many([JobSpec("sleeper", "0.3") for _ in range(200)])
    await wait_until(lambda: db.fetchval("SELECT count(*) > 10 FROM test_runs"), timeout=20, what="the backlog")

    paused = run_pgqd("pause", "sleeper", "--dsn", db_dsn)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "paused: sleeper"
    paused_at = await db.fetchval("SELECT clock_timestamp()")
    held_back = await client.enqueue_many([JobSpec("sleeper", "0") for _ in range(5)])
    others = await client.enqueue_many([JobSpec("other") for _ in range(5)])

    await wait_until(
        lambda: db.fetchval("SELECT count(*) = 6 FROM pgqd_log WHERE job_id = ANY ($1::bigint[])", [*others, running]),
        timeout=20,
        what="the other entrypoint's jobs and the job running at the pause to finish",
    )
    assert await db.fetchval("SELECT status::text FROM pgqd_log WHERE job_id = $1", running) == "successful"
    await wait_until(
        lambda: db.fetchval("SELECT count(*) = 0 FROM pgqd_jobs WHERE status = 'picked'"),
        timeout=20,
        what="the jobs claimed before the pause to finish",
    )
    assert await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = ANY ($1::bigint[])", held_back) == 0
    late_starts = await db.fetchval(
        "SELECT count(*) FROM test_runs WHERE entrypoint = 'sleeper' AND started > $1::timestamptz + interval '1s'",
        paused_at,
    )
    assert late_starts == 0
    waiting = await db.fetchval("SELECT count(*) FROM pgqd_jobs WHERE id = ANY ($1::bigint[])", backlog)
    assert waiting > 0  # the pause cut into the backlog, so the check above had jobs it could have started
    statuses = await db.fetchval("SELECT array_agg(DISTINCT status::text) FROM pgqd_jobs")
    assert statuses == ["queued"]

    wait_for(
        lambda: 'pgqd_entrypoint_paused{entrypoint="sleeper"} 1.0' in http_get(port, "/metrics")[1],
        timeout=15,
        what="the paused gauge",
        interval=0.5,
    )
    assert 'pgqd_entrypoint_paused{entrypoint="other"} 0.0' in http_get(port, "/metrics")[1]
    dashboard = run_pgqd("dashboard", "--once", "--dsn", db_dsn)
    sleeper_line = next(line for line in dashboard.stdout.splitlines() if line.strip().startswith("sleeper"))
    assert sleeper_line.split()[1] == str(5 + waiting)
    assert sleeper_line.split()[-1] == "paused"

    resumed = run_pgqd("resume", "sleeper", "--dsn", db_dsn)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "nothing is paused"
    await wait_until(
        lambda: db.fetchval("SELECT count(*) = 0 FROM pgqd_jobs"),
        timeout=30,
        what="the held-back jobs and the rest of the backlog to run after resume",
    )
    assert await db.fetchval("SELECT count(*) FROM pgqd_log WHERE job_id = ANY ($1::bigint[])", held_back) == 5


async def test_pause_resume_and_paused_commands_store_the_state(db: Any, db_dsn: str) -> None:
    def pgqd(*args: str) -> str:
        done = run_pgqd(*args, "--dsn", db_dsn)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert pgqd("paused") == "nothing is paused"
    assert pgqd("pause", "mail", "report") == "paused: mail, report"
    assert (await Client(db).paused()).paused == {"mail", "report"}
    assert pgqd("resume", "mail") == "paused: report"
    assert pgqd("pause", "--all") == "every entrypoint is paused"
    assert (await Client(db).paused()).is_paused("never-enqueued")
    assert pgqd("resume", "report") == "every entrypoint is paused except report"
    assert json.loads(pgqd("paused", "--json")) == {"all_paused": True, "paused": [], "excepted": ["report"]}
    assert pgqd("resume", "--all") == "nothing is paused"
    assert await db.fetchval("SELECT count(*) FROM pgqd_entrypoint_pauses") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pause",), "name at least one entrypoint, or give --all"),
        (("resume",), "name at least one entrypoint, or give --all"),
        (("pause", "mail", "--all"), "not both"),
        (("resume", "*"), "'*' is not an entrypoint name: give --all"),
        (("pause", ""), "entrypoint names must not be empty"),
        (("pause", "two words"), "'two words' is not an entrypoint name"),
        (("pause", "a" * 5000), "at most 200 characters"),
        (("pause", "mail", "--everything"), "unrecognized arguments: --everything"),
    ],
)
async def test_pause_and_resume_refuse_bad_input_with_a_usage_error(
    db: Any, db_dsn: str, args: tuple[str, ...], message: str
) -> None:
    done = run_pgqd(*args, "--dsn", db_dsn)
    assert done.returncode == 2
    assert message in done.stderr
    assert await db.fetchval("SELECT count(*) FROM pgqd_entrypoint_pauses") == 0


def test_pause_without_a_reachable_database_fails_and_says_where_it_tried() -> None:
    done = run_pgqd("pause", "mail", "--dsn", "postgresql://postgres@127.0.0.1:1/none")
    assert done.returncode == 1
    assert "could not connect to postgresql://postgres@127.0.0.1:1/none" in done.stderr


async def test_changes_from_the_cli_are_recorded_in_the_action_log(db: Any, db_dsn: str) -> None:
    ids = await Client(db).enqueue_many([JobSpec("mail", "1"), JobSpec("mail", "2")])
    assert run_pgqd("pause", "mail", "--dsn", db_dsn).returncode == 0
    assert run_pgqd("jobs", "cancel", *map(str, ids), "--dsn", db_dsn).returncode == 0
    rows = await db.fetch("SELECT actor, source, action, target, requested, changed FROM pgqd_action_log ORDER BY id")
    assert [(r["source"], r["action"], r["target"], r["requested"], r["changed"]) for r in rows] == [
        ("cli", "pause", "mail", 1, 1),
        ("cli", "cancel", f"#{ids[0]}, #{ids[1]}", 2, 2),
    ]
    assert "@" in rows[0]["actor"]
