"""Where a worker's claims start reading the ready jobs (pgqd/backend/ready_scan.py, migration 0017): the start
is kept only while claims come back full, dropped after the worker's own requeues and every half second, and a
claim from a start that comes back short is completed by a whole read, so no job is ever left for later while a
worker takes less than its batch."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from pgqd import Client, JobSpec, PostgresBackend
from pgqd.backend import ready_scan
from pgqd.backend.ready_scan import WHOLE_READ_EVERY, ReadyScanStarts
from pgqd.models import ClaimedJob, EntrypointLimit, Event, Unfinished, WorkerInfo
from tests.support.waiting import wait_until


def job(entrypoint: str, priority: int, job_id: int) -> ClaimedJob:
    return ClaimedJob(job_id, entrypoint, None, None, priority, 1, 0.0, 0.0, 0.0, False)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_first_claim_reads_everything_and_the_next_one_starts_where_it_did() -> None:
    starts = ReadyScanStarts(clock := Clock())
    sent = starts.for_claim(["a", "b"])
    assert (sent.priorities, sent.ids) == (None, None)
    # The first id at the lowest priority taken: the claim read priority 2 first, then priority 0 from id 41.
    starts.claimed(sent, [job("a", 2, 50), job("a", 0, 41), job("a", 0, 44)], complete=True)
    clock.now += WHOLE_READ_EVERY / 2
    sent = starts.for_claim(["a", "b"])
    assert (sent.priorities, sent.ids) == ([0, None], [41, None])


def test_a_short_claim_or_the_whole_read_period_drops_the_starts() -> None:
    starts = ReadyScanStarts(clock := Clock())
    starts.claimed(starts.for_claim(["a"]), [job("a", 0, 41)], complete=True)
    starts.claimed(starts.for_claim(["a"]), [job("a", 0, 45)], complete=False)
    assert starts.for_claim(["a"]).ids is None
    starts.claimed(starts.for_claim(["a"]), [job("a", 0, 45)], complete=True)
    clock.now += WHOLE_READ_EVERY
    assert starts.for_claim(["a"]).ids is None
    assert starts.starts == {}


def test_starts_of_other_entrypoints_only_mean_a_whole_read() -> None:
    starts = ReadyScanStarts(Clock())
    starts.claimed(starts.for_claim(["a"]), [job("a", 0, 41)], complete=True)
    assert starts.for_claim(["b"]).ids is None
    assert starts.for_claim(["a", "b"]).ids == [41, None]


def test_jobs_put_back_or_of_a_higher_priority_drop_the_start_of_their_entrypoint() -> None:
    starts = ReadyScanStarts(Clock())
    starts.claimed(starts.for_claim(["a", "b"]), [job("a", 0, 41), job("b", 3, 7)], complete=True)
    starts.enqueued(["a", "b"], top_priority=3)  # new jobs: a later id, so only a higher priority matters
    assert starts.starts == {"b": (3, 7)}
    starts.enqueued(["b"], top_priority=None)  # put back with old ids
    assert starts.starts == {}


def test_a_claim_sent_before_a_drop_does_not_set_the_start_again() -> None:
    starts = ReadyScanStarts(Clock())
    starts.claimed(starts.for_claim(["a"]), [job("a", 0, 41)], complete=True)
    in_flight = starts.for_claim(["a"])
    starts.enqueued([], top_priority=None)
    starts.claimed(in_flight, [job("a", 0, 51)], complete=True)
    assert starts.for_claim(["a"]).ids is None


async def test_claims_from_a_start_take_every_job_in_order_across_priorities(conn: Any) -> None:
    client = Client(conn)
    # Two priorities: the claims from a start run the higher one dry in the middle of a batch.
    ids = await client.enqueue_many([JobSpec("work", priority=1) for _ in range(15)])
    ids += await client.enqueue_many([JobSpec("work") for _ in range(15)])
    backend = PostgresBackend(conn)
    worker = await backend.register_worker(WorkerInfo("host", 1, ("work",)))
    claimed = []
    for _ in range(3):
        result = await backend.claim(worker, 10, [EntrypointLimit("work")])
        assert len(result.jobs) == 10
        claimed += [job.id for job in result.jobs]
    assert claimed == ids


async def test_a_job_the_worker_releases_is_its_next_claims_first(conn: Any) -> None:
    ids = await Client(conn).enqueue_many([JobSpec("work") for _ in range(30)])
    backend = PostgresBackend(conn)
    worker = await backend.register_worker(WorkerInfo("host", 1, ("work",)))
    first = await backend.claim(worker, 10, [EntrypointLimit("work")])
    second = await backend.claim(worker, 10, [EntrypointLimit("work")])
    assert [job.id for job in first.jobs + second.jobs] == ids[:20]

    await backend.record(worker, [Unfinished(ids[3], "release")], [])
    third = await backend.claim(worker, 10, [EntrypointLimit("work")])
    assert [job.id for job in third.jobs] == [ids[3], *ids[20:29]]


async def test_a_job_another_worker_puts_back_is_the_next_claims_first(conn: Any) -> None:
    ids = await Client(conn).enqueue_many([JobSpec("work") for _ in range(30)])
    backend = PostgresBackend(conn)
    events: list[Event] = []
    subscription = await backend.subscribe(events.append)
    try:
        worker = await backend.register_worker(WorkerInfo("host", 1, ("work",)))
        other = await backend.register_worker(WorkerInfo("host", 2, ("work",)))
        mine = await backend.claim(worker, 10, [EntrypointLimit("work")])
        theirs = await backend.claim(other, 1, [EntrypointLimit("work")])
        assert [job.id for job in mine.jobs + theirs.jobs] == ids[:11]
        assert (await backend.claim(worker, 5, [EntrypointLimit("work")])).jobs[0].id == ids[11]

        await backend.record(other, [Unfinished(ids[10], "release")], [])

        async def notified() -> bool:
            return any(e.kind == "enqueued" and e.top_priority is None for e in events)

        await wait_until(notified, timeout=10, what="the notice of the job put back")
        after = await backend.claim(worker, 5, [EntrypointLimit("work")])
        assert [job.id for job in after.jobs] == [ids[10], *ids[16:20]]
    finally:
        await subscription.close()


# Queued jobs that a transaction holds: those that another connection's locking read has to skip.
HELD_QUEUED = """
SELECT (SELECT count(*) FROM pgqd_jobs WHERE status = 'queued')
     - (SELECT count(*) FROM (SELECT 1 FROM pgqd_jobs WHERE status = 'queued' FOR UPDATE SKIP LOCKED) AS s)
"""


async def test_claims_from_the_starts_of_several_entrypoints_keep_the_order_and_lock_only_what_they_take(
    db_dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every claim after the first reads from its starts, however slowly the test runs.
    monkeypatch.setattr(ready_scan, "WHOLE_READ_EVERY", 3600.0)
    # Jobs of three entrypoints in an uneven mix, so that each claim takes other shares of them; claims of 100, so
    # that the two entrypoints beyond the first would lock 200 rows more than the batch (migration 0019).
    pattern = "aabacbaacbbcaaab"
    ids = await Client(conn).enqueue_many([JobSpec(pattern[n % len(pattern)]) for n in range(800)])
    backend = PostgresBackend(conn)
    limits = [EntrypointLimit(name) for name in "abc"]
    worker = await backend.register_worker(WorkerInfo("host", 1, ("a", "b", "c")))
    other = await asyncpg.connect(db_dsn)
    try:
        claimed: list[int] = []
        for number in range(6):
            async with conn.transaction():
                jobs = (await backend.claim(worker, 100, limits)).jobs
                held = await other.fetchval(HELD_QUEUED)
            assert len(jobs) == 100
            if number > 0:
                # From the starts the claim before set: no job locked but those it took. A claim that locked up to
                # a batch of each entrypoint held 300 here.
                assert held == len(jobs)
            claimed += [job.id for job in jobs]
    finally:
        await other.close()
    assert claimed == ids[:600]
