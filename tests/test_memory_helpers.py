"""The in-memory backend's helpers for users' own tests: a manual clock, the finished jobs, and reset (the
example in README's "Unit tests of your handlers")."""

from __future__ import annotations

import pytest

from pgqd import Client, Entrypoint, Job, ManualClock, MemoryBackend, RetryPolicy, Worker, WorkerSettings


async def test_a_manual_clock_lets_a_retry_come_due_without_sleeping() -> None:
    attempts: list[int] = []

    async def send_email(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            raise ConnectionError("smtp down")

    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    retry = RetryPolicy(max_attempts=2, initial=60)
    worker = Worker(backend, [Entrypoint("send_email", send_email, retry=retry)], WorkerSettings(poll_interval=30))
    job_id = await Client(backend).enqueue("send_email", {"to": "ada@example.com"})

    await worker.run(drain=True)
    assert attempts == [1]
    assert backend.finished() == []
    assert (await backend.job_states([job_id]))[job_id].status == "deferred"

    clock.advance(60)
    await worker.run(drain=True)
    assert attempts == [1, 2]
    [done] = backend.finished("send_email")
    assert (done.id, done.status, done.attempts) == (job_id, "successful", 2)


async def test_finished_lists_jobs_in_the_order_they_ended_with_their_outcome() -> None:
    async def check(job: Job) -> str:
        if job.text() == "bad":
            raise ValueError("bad input")
        return "ok"

    backend = MemoryBackend()
    client = Client(backend)
    first = await client.enqueue("check", "good")
    second = await client.enqueue("check", "bad")
    await Worker(backend, [Entrypoint("check", check, store_result=True)], WorkerSettings(concurrency=1)).run(
        drain=True
    )
    assert [state.id for state in backend.finished()] == [first, second]
    [failed] = backend.finished(status="exception")
    assert failed.error is not None
    assert (failed.error.type, failed.error.message) == ("ValueError", "bad input")
    assert backend.finished(status="successful")[0].result == "ok"
    assert backend.finished("other") == []

    backend.reset()
    assert backend.finished() == []
    assert await client.enqueue("check", "good") == 1  # ids start again


def test_a_manual_clock_stands_still_and_only_moves_forward() -> None:
    clock = ManualClock(start=1_000.0)
    assert clock() == clock() == 1_000.0
    clock.advance(2.5)
    assert clock() == 1_002.5
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    running = ManualClock(start=1_000.0, running=True)
    running.advance(10)
    assert running() >= 1_010.0
