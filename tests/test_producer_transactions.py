"""Whatever the producer's connection kind, the job joins the caller's transaction: a rollback leaves no job
and wakes no worker; a commit makes it visible and wakes an idle daemon at once through NOTIFY. Targets
without a transaction of the caller's (pools, engines, autocommit connections, a DSN) commit by themselves."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.producers import (
    AUTOCOMMIT,
    TRANSACTIONAL,
    Notices,
    call,
    idle_daemon,
    job_exists,
    job_ran,
    notices,
    queue_db,
    queue_dsn,
)
from tests.support.waiting import wait_until

__all__ = ["idle_daemon", "notices", "queue_db", "queue_dsn"]  # fixtures

pytestmark = pytest.mark.slow

# The daemon polls once a minute: a job that runs within this many seconds was announced by NOTIFY.
WOKEN_WITHIN = 5.0


async def assert_runs_promptly(db: Any, job_id: int) -> None:
    began = time.monotonic()
    await wait_until(lambda: job_ran(db, job_id), timeout=WOKEN_WITHIN, what=f"job {job_id} to run")
    assert time.monotonic() - began < WOKEN_WITHIN


@pytest.mark.parametrize("kind", sorted(TRANSACTIONAL))
async def test_job_joins_the_callers_transaction(
    kind: str, queue_dsn: str, queue_db: Any, idle_daemon: Daemon, notices: Notices
) -> None:
    enqueue_in_transaction = TRANSACTIONAL[kind]

    rolled_back = await enqueue_in_transaction(queue_dsn, False)
    assert await notices.until_marker() == [], "a rolled-back enqueue must not notify"
    assert not await job_exists(queue_db, rolled_back)

    committed = await enqueue_in_transaction(queue_dsn, True)
    assert len(await notices.until_marker()) == 1
    await assert_runs_promptly(queue_db, committed)
    assert not await job_exists(queue_db, rolled_back)


@pytest.mark.parametrize("kind", sorted(AUTOCOMMIT))
async def test_target_without_a_transaction_commits_each_call(
    kind: str, queue_dsn: str, queue_db: Any, idle_daemon: Daemon, notices: Notices
) -> None:
    async with AUTOCOMMIT[kind](queue_dsn) as client:
        job = await call(client.enqueue("sleeper"))
        # Visible at once to another session, so it was committed; and announced.
        assert await job_exists(queue_db, job)
        assert len(await notices.until_marker()) == 1
        await assert_runs_promptly(queue_db, job)
