"""Where a worker's claims start reading the ready jobs (pgqd/backend/ready_scan.py, migration 0017): the start
is kept only while claims come back full, dropped after the worker's own requeues and every half second, and a
claim from a start that comes back short is completed by a whole read, so no job is ever left for later while a
worker takes less than its batch."""

from __future__ import annotations

from typing import Any

from pgqd import Client, JobSpec, PostgresBackend
from pgqd.backend.ready_scan import WHOLE_READ_EVERY, ReadyScanStarts
from pgqd.models import EntrypointLimit, Requeued, WorkerInfo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_first_claim_reads_everything_and_the_next_one_starts_where_it_did() -> None:
    starts = ReadyScanStarts(clock := Clock())
    assert starts.for_claim(["a", "b"]) == (None, None)
    starts.claimed({"a": (0, 41)}, complete=True)
    clock.now += WHOLE_READ_EVERY / 2
    assert starts.for_claim(["a", "b"]) == ([0, None], [41, None])


def test_a_short_claim_or_the_whole_read_period_drops_the_starts() -> None:
    starts = ReadyScanStarts(clock := Clock())
    starts.for_claim(["a"])
    starts.claimed({"a": (0, 41)}, complete=True)
    starts.claimed({"a": (0, 45)}, complete=False)
    assert starts.for_claim(["a"]) == (None, None)
    starts.claimed({"a": (0, 45)}, complete=True)
    clock.now += WHOLE_READ_EVERY
    assert starts.for_claim(["a"]) == (None, None)
    assert starts.starts == {}


def test_starts_of_other_entrypoints_only_mean_a_whole_read() -> None:
    starts = ReadyScanStarts(Clock())
    starts.for_claim(["a"])
    starts.claimed({"a": (0, 41)}, complete=True)
    assert starts.for_claim(["b"]) == (None, None)
    assert starts.for_claim(["a", "b"]) == ([0, None], [41, None])


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

    await backend.record(worker, [Requeued(ids[3], "release")], [])
    third = await backend.claim(worker, 10, [EntrypointLimit("work")])
    assert [job.id for job in third.jobs] == [ids[3], *ids[20:29]]
