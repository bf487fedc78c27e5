"""Recovery after a worker dies, in the real daemon (benchmarks/recovery.py at a small scale): a killed worker's
jobs all run again at once, in parallel; killing the worker that runs a suspect alone does not give it up; a
poison job among many running jobs is given up within its bound, and nobody else is."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.recovery import (
    POISON,
    kill_a_busy_worker,
    kill_a_suspects_worker,
    poison_among_ordinary_jobs,
    recovery_config,
)
from tests.support.daemon import StartDaemon

pytestmark = pytest.mark.slow

JOB_SECONDS = 3.0


async def test_every_job_of_a_killed_worker_runs_again_at_once_in_parallel(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(recovery_config()).wait_ready()

    report = await kill_a_busy_worker(db, daemon, jobs=44, seconds=JOB_SECONDS)

    assert report.jobs_held >= 22
    assert report.given_up == 0
    # Detection plus about two job lengths, whatever the number of jobs it held (one at a time, 22 jobs of 3 s
    # would take over a minute); the worker_timeout of 60 s is far away, so this is the supervisor's rescue.
    assert report.recovered_s < report.detected_s + 2 * JOB_SECONDS + 2


async def test_killing_the_worker_that_runs_a_suspect_alone_does_not_give_it_up(
    db: Any, start_daemon: StartDaemon
) -> None:
    start_daemon(recovery_config()).wait_ready()

    report = await kill_a_suspects_worker(db, seconds=2.0)

    assert report.status == "successful"
    assert report.runs == 4  # two runs among others, one alone that was killed, one alone that ended
    assert report.ran_alone


async def test_a_poison_job_at_high_concurrency_is_given_up_within_its_bound_and_nobody_else_is(
    db: Any, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(recovery_config(extra=POISON)).wait_ready()

    report = await poison_among_ordinary_jobs(db, daemon, ordinary=1500)

    assert report.status == "exception"
    assert report.error is not None
    assert report.error.endswith("in death 3 of 3 allowed: given up")
    assert 3 <= report.poison_runs <= 5  # 2 deaths among other jobs, then max_worker_deaths (3) alone
    assert report.workers_died == report.poison_runs
    assert report.bystanders_not_successful == 0
    assert report.daemon_alive
