"""How the worker engine treats jobs, proven on both storage backends.

Every test here runs twice, through the ``backend`` fixture: on PostgreSQL and on the in-memory backend, so the
two adapters of the storage port cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgqd import (
    Client,
    Context,
    Entrypoint,
    Job,
    JobSpec,
    JobState,
    PauseState,
    PgqdError,
    Rate,
    RetryLater,
    RetryPolicy,
    Worker,
)
from pgqd.backend.base import Backend
from pgqd.errors import BackendUnavailable
from pgqd.models import ClaimedJob, EntrypointLimit, Event, Finished, Outcome, Unfinished, WorkerInfo
from pgqd.worker.dispatch_state import CLAIMS_IN_FLIGHT
from pgqd.worker.execution import JobRun, PreparedHandler
from tests.support.engine import drain, fast_settings, running_worker
from tests.support.time_passes import TimePasses
from tests.support.waiting import wait_until


async def state_of(client: Client, job_id: int | None) -> JobState:
    assert job_id is not None
    return (await client.status(job_id))[job_id]


async def final_state(client: Client, job_id: int | None, timeout: float = 10.0) -> JobState:
    assert job_id is not None
    return await client.wait(job_id, timeout=timeout)


def is_set(event: threading.Event) -> Callable[[], Awaitable[bool]]:
    """A check for ``wait_until`` on an event set by a handler thread."""

    async def check() -> bool:
        return event.is_set()

    return check


class Overlap:
    """Counts how many handlers run at the same time."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.done = 0

    async def run(self, seconds: float) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1
            self.done += 1


# --- ordering -----------------------------------------------------------------------------------------------


async def test_higher_priority_runs_first_across_entrypoints_and_fifo_within_a_priority(
    backend: Backend, client: Client
) -> None:
    order: list[tuple[str, int]] = []

    async def record(job: Job) -> None:
        order.append((job.entrypoint, job.json()))

    await client.enqueue_many(
        [
            JobSpec("low", 1, priority=0),
            JobSpec("high", 1, priority=10),
            JobSpec("low", 2, priority=0),
            JobSpec("mid", 1, priority=5),
            JobSpec("high", 2, priority=10),
            JobSpec("low", 3, priority=0),
            JobSpec("mid", 2, priority=5),
            JobSpec("low", 4, priority=7),
        ]
    )
    entrypoints = [Entrypoint(name, record) for name in ("low", "mid", "high")]
    await drain(Worker(backend, entrypoints, fast_settings(concurrency=1, batch_size=1)))

    assert order == [
        ("high", 1),
        ("high", 2),
        ("low", 4),
        ("mid", 1),
        ("mid", 2),
        ("low", 1),
        ("low", 2),
        ("low", 3),
    ]


# --- deferred jobs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["timedelta", "aware datetime"])
async def test_deferred_job_waits_until_its_time_and_runs_shortly_after(
    backend: Backend, client: Client, form: str
) -> None:
    delay = 1.0
    ran_at: list[float] = []

    async def handler(job: Job) -> None:
        ran_at.append(time.monotonic())

    # With polls 30 s apart, only the job's due time can wake the worker in time.
    worker = Worker(backend, [Entrypoint("later", handler)], fast_settings(poll_interval=30))
    async with running_worker(worker):

        async def idle() -> bool:  # listening, and its first claim found nothing
            return worker.state.claims_settled > 0 and not worker.state.claiming

        await wait_until(idle, timeout=5, what="the worker to be idle")
        enqueued_at = time.monotonic()
        when = timedelta(seconds=delay) if form == "timedelta" else datetime.now(UTC) + timedelta(seconds=delay)
        job_id = await client.enqueue("later", execute_after=when)
        assert (await state_of(client, job_id)).status == "deferred"

        await asyncio.sleep(delay / 2)
        assert ran_at == [], "a deferred job ran before its time"

        state = await final_state(client, job_id, timeout=5)

    assert state.status == "successful"
    assert len(ran_at) == 1
    # A small margin for the clocks involved (database, wall clock and monotonic clock).
    assert ran_at[0] - enqueued_at >= delay - 0.05
    assert ran_at[0] - enqueued_at < delay + 1.5, "the worker did not wake up for the deferred job"


async def test_a_handler_sees_its_jobs_times_as_aware_datetimes_to_the_microsecond(
    backend: Backend, client: Client
) -> None:
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    due = datetime.now(UTC) + timedelta(seconds=0.3)
    job_id = await client.enqueue("timed", execute_after=due)
    worker = Worker(backend, [Entrypoint("timed", handler)], fast_settings())
    async with running_worker(worker):
        assert (await final_state(client, job_id)).status == "successful"

    [job] = seen
    assert job.execute_after == due  # exactly what the producer asked for
    assert job.created_at < job.execute_after <= job.picked_at
    assert job.picked_at - job.created_at < timedelta(seconds=10)
    assert all(t.utcoffset() == timedelta(0) for t in (job.created_at, job.execute_after, job.picked_at))
    assert f"id={job_id}" in repr(job)


# --- failures and retries -----------------------------------------------------------------------------------


async def test_failed_runs_are_retried_with_exponential_backoff(backend: Backend, client: Client) -> None:
    starts: list[float] = []
    attempts_seen: list[int] = []

    async def flaky(job: Job) -> None:
        starts.append(time.monotonic())
        attempts_seen.append(job.attempts)
        if len(starts) < 3:
            raise RuntimeError(f"failure number {len(starts)}")

    retry = RetryPolicy(max_attempts=3, initial=0.3, jitter=False, backoff="exponential")
    worker = Worker(backend, [Entrypoint("flaky", flaky, retry=retry)], fast_settings(poll_interval=30))
    async with running_worker(worker):
        job_id = await client.enqueue("flaky")
        state = await final_state(client, job_id)

    assert state.status == "successful"
    assert state.attempts == 3
    assert attempts_seen == [1, 2, 3]
    first_gap, second_gap = starts[1] - starts[0], starts[2] - starts[1]
    assert 0.3 <= first_gap < 2.0
    assert 0.6 <= second_gap < 2.5


async def test_exhausted_retries_with_on_failure_delete_log_the_exception(backend: Backend, client: Client) -> None:
    runs: list[int] = []

    async def broken_handler(job: Job) -> None:
        runs.append(job.attempts)
        raise ValueError("bad input 42")

    retry = RetryPolicy(max_attempts=2, initial=0.05, jitter=False)
    entrypoint = Entrypoint("broken", broken_handler, retry=retry, on_failure="delete")
    async with running_worker(Worker(backend, [entrypoint], fast_settings())):
        job_id = await client.enqueue("broken")
        state = await final_state(client, job_id)

    assert runs == [1, 2]
    assert state.status == "exception"
    assert state.attempts == 2
    assert state.error is not None
    assert state.error.type == "ValueError"
    assert state.error.message == "bad input 42"
    assert "Traceback (most recent call last)" in state.error.traceback
    assert "broken_handler" in state.error.traceback
    assert "ValueError: bad input 42" in state.error.traceback


async def test_exhausted_retries_with_on_failure_hold_keep_the_job_until_requeued(
    backend: Backend, client: Client
) -> None:
    fixed = False
    runs: list[int] = []

    async def handler(job: Job) -> str:
        runs.append(job.attempts)
        if not fixed:
            raise LookupError("the record is missing")
        return "done"

    entrypoint = Entrypoint("held", handler, retry=RetryPolicy(max_attempts=1), on_failure="hold")
    async with running_worker(Worker(backend, [entrypoint], fast_settings())):
        job_id = await client.enqueue("held")
        assert job_id is not None
        held = await final_state(client, job_id)
        assert held.status == "failed"
        assert not held.finished
        assert held.error is not None
        assert held.error.type == "LookupError"
        assert held.error.message == "the record is missing"
        await asyncio.sleep(0.3)
        assert runs == [1], "a held job must not run again by itself"

        fixed = True
        assert await client.requeue([job_id]) == [job_id]
        state = await final_state(client, job_id)

    assert state.status == "successful"
    assert state.attempts == 1  # requeue gives a fresh attempt budget
    assert runs == [1, 1]


async def test_a_handler_running_past_its_timeout_ends_as_timeout(backend: Backend, client: Client) -> None:
    interrupted = asyncio.Event()

    async def slow(job: Job) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    entrypoint = Entrypoint("slow", slow, timeout=0.3)
    async with running_worker(Worker(backend, [entrypoint], fast_settings())):
        started = time.monotonic()
        job_id = await client.enqueue("slow")
        state = await final_state(client, job_id, timeout=5)

    assert state.status == "timeout"
    assert time.monotonic() - started < 4
    assert interrupted.is_set()
    assert state.error is not None
    assert state.error.type == "TimeoutError"


async def test_retry_later_runs_the_job_again_after_its_delay_whatever_max_attempts_says(
    backend: Backend, client: Client
) -> None:
    starts: list[float] = []

    async def poller(job: Job) -> int:
        starts.append(time.monotonic())
        if job.attempts == 1:
            raise RetryLater(0.3, "not ready yet")
        if job.attempts < 5:
            raise RetryLater(timedelta(milliseconds=50))
        return job.attempts

    entrypoint = Entrypoint("poll", poller, retry=RetryPolicy(max_attempts=1), store_result=True)
    async with running_worker(Worker(backend, [entrypoint], fast_settings(poll_interval=30))):
        job_id = await client.enqueue("poll")
        state = await final_state(client, job_id)

    assert state.status == "successful"
    assert state.attempts == 5
    assert state.result == 5
    assert len(starts) == 5
    assert 0.3 <= starts[1] - starts[0] < 2.0
    assert all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(starts[1:]))


# --- results ------------------------------------------------------------------------------------------------


async def test_wait_returns_the_stored_result_as_soon_as_the_job_finishes(backend: Backend, client: Client) -> None:
    release = asyncio.Event()

    async def add(job: Job) -> dict[str, Any]:
        await asyncio.wait_for(release.wait(), 10)
        numbers = job.json()
        return {"sum": sum(numbers), "items": numbers, "note": "ünïcode"}

    async def no_result(job: Job) -> str:
        return "not kept"

    entrypoints = [Entrypoint("add", add, store_result=True), Entrypoint("plain", no_result)]
    # Polling alone would take 30 s: only the finished event can wake this wait in time.
    slow_poller = Client(backend, wait_poll_interval=30)
    async with slow_poller, running_worker(Worker(backend, entrypoints, fast_settings())):
        job_id = await client.enqueue("add", [1, 2, 39])
        plain_id = await client.enqueue("plain")
        assert job_id is not None
        waiting = asyncio.create_task(slow_poller.wait(job_id, timeout=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        released_at = time.monotonic()
        release.set()
        state = await asyncio.wait_for(waiting, 10)
        woken_after = time.monotonic() - released_at
        plain = await final_state(client, plain_id)

    assert state.status == "successful"
    assert state.result == {"sum": 42, "items": [1, 2, 39], "note": "ünïcode"}
    assert woken_after < 3
    assert plain.status == "successful"
    assert plain.result is None


async def test_finished_jobs_keep_their_payload_only_for_entrypoints_that_keep_payloads(
    backend: Backend, client: Client
) -> None:
    async def fail(job: Job) -> None:
        raise ValueError("bad input")

    async def succeed(job: Job) -> None:
        return None

    entrypoints = [
        Entrypoint("kept", fail, keep_payload=True, retry=RetryPolicy(max_attempts=1)),
        Entrypoint("forgotten", succeed),
    ]
    kept_id = await client.enqueue("kept", {"to": "ada@example.com"})
    forgotten_id = await client.enqueue("forgotten", b"\x00secret")
    assert (await state_of(client, forgotten_id)).payload == b"\x00secret"  # a live job shows its payload
    async with running_worker(Worker(backend, entrypoints, fast_settings())):
        kept = await final_state(client, kept_id)
        forgotten = await final_state(client, forgotten_id)

    assert (kept.status, kept.payload) == ("exception", b'{"to":"ada@example.com"}')
    assert (forgotten.status, forgotten.payload) == ("successful", None)


async def test_a_canceled_django_task_keeps_its_payload_and_other_canceled_jobs_do_not(client: Client) -> None:
    # A Django task's result names its task from the payload, so a cancel keeps it; a cancel knows nothing of
    # the other entrypoints' keep_payload, so it keeps none.
    task_id = await client.enqueue("django.default", {"task": "app.tasks.t", "args": [], "kwargs": {}})
    plain_id = await client.enqueue("plain", "secret")
    assert task_id is not None
    assert plain_id is not None
    await client.cancel([task_id, plain_id])
    states = await client.status([task_id, plain_id])
    assert (states[task_id].status, states[task_id].payload) == (
        "canceled",
        b'{"task":"app.tasks.t","args":[],"kwargs":{}}',
    )
    assert (states[plain_id].status, states[plain_id].payload) == ("canceled", None)


# --- cancellation -------------------------------------------------------------------------------------------


async def test_a_cancelled_queued_job_never_runs(backend: Backend, client: Client) -> None:
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    doomed = await client.enqueue("task")
    kept = await client.enqueue("task")
    assert doomed is not None
    result = await client.cancel(doomed)
    assert result.canceled == [doomed]
    assert result.signalled == []

    await drain(Worker(backend, [Entrypoint("task", handler)], fast_settings()))

    assert ran == [kept]
    assert (await state_of(client, doomed)).status == "canceled"
    assert (await state_of(client, kept)).status == "successful"


async def test_cancelling_a_running_async_job_interrupts_its_handler(backend: Backend, client: Client) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()

    async def long_task(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    async with running_worker(Worker(backend, [Entrypoint("long", long_task)], fast_settings())):
        job_id = await client.enqueue("long")
        assert job_id is not None
        await asyncio.wait_for(started.wait(), 5)
        result = await client.cancel(job_id)
        assert result.signalled == [job_id]
        state = await final_state(client, job_id, timeout=5)

    assert state.status == "canceled"
    assert interrupted.is_set()


async def test_cancelling_a_running_sync_job_sets_its_cancelled_flag(backend: Backend, client: Client) -> None:
    started = threading.Event()
    noticed = threading.Event()

    def long_task(job: Job, ctx: Context) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not ctx.cancelled.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        if ctx.cancelled.is_set():
            noticed.set()

    async with running_worker(Worker(backend, [Entrypoint("long", long_task)], fast_settings())):
        job_id = await client.enqueue("long")
        assert job_id is not None
        await wait_until(is_set(started), timeout=5, what="the handler to start")
        result = await client.cancel(job_id)
        assert result.signalled == [job_id]
        state = await final_state(client, job_id, timeout=5)
        await wait_until(is_set(noticed), timeout=5, what="the handler to see ctx.cancelled")

    assert state.status == "canceled"


async def test_a_sync_handler_blocked_on_its_cancelled_flag_wakes_when_the_job_is_cancelled(
    backend: Backend, client: Client
) -> None:
    started = threading.Event()
    woke: list[bool] = []

    def waiting_task(job: Job, ctx: Context) -> None:
        started.set()
        woke.append(ctx.cancelled.wait_blocking(timeout=30))

    async with running_worker(Worker(backend, [Entrypoint("waiting", waiting_task)], fast_settings())):
        job_id = await client.enqueue("waiting")
        assert job_id is not None
        await wait_until(is_set(started), timeout=5, what="the handler to start")
        began = time.monotonic()
        assert (await client.cancel(job_id)).signalled == [job_id]
        state = await final_state(client, job_id, timeout=5)

        async def woken() -> bool:
            return bool(woke)

        await wait_until(woken, timeout=5, what="the handler's wait to end")
    assert woke == [True]
    assert time.monotonic() - began < 10  # woken by the cancel, not by its own 30 s timeout
    assert state.status == "canceled"


# --- handlers -----------------------------------------------------------------------------------------------


async def test_handlers_take_the_job_alone_or_the_job_and_a_context_with_the_workers_resources(
    backend: Backend, client: Client
) -> None:
    resources = {"db": object(), "name": "shared"}
    seen: dict[str, Any] = {}

    async def job_only(job: Job) -> None:
        seen["job_only"] = job.json()

    async def with_context(job: Job, ctx: Context) -> None:
        seen["with_context"] = ctx.resources
        assert not ctx.cancelled.is_set()

    def sync_with_context(job: Job, ctx: Context) -> None:
        seen["sync_with_context"] = ctx.resources

    entrypoints = [
        Entrypoint("job_only", job_only),
        Entrypoint("with_context", with_context),
        Entrypoint("sync_with_context", sync_with_context),
    ]
    ids = await client.enqueue_many(
        [JobSpec("job_only", {"a": 1}), JobSpec("with_context"), JobSpec("sync_with_context")]
    )
    await drain(Worker(backend, entrypoints, fast_settings(), resources=resources))

    assert seen["job_only"] == {"a": 1}
    assert seen["with_context"] is resources
    assert seen["sync_with_context"] is resources
    states = await client.status([i for i in ids if i is not None])
    assert {state.status for state in states.values()} == {"successful"}


async def test_sync_handlers_run_in_a_thread_and_async_handlers_on_the_loop(backend: Backend, client: Client) -> None:
    threads: dict[str, int] = {}

    def blocking(job: Job) -> None:
        time.sleep(0.05)  # would block the loop if it ran there
        threads["sync"] = threading.get_ident()

    async def cooperative(job: Job) -> None:
        threads["async"] = threading.get_ident()

    await client.enqueue_many([JobSpec("blocking"), JobSpec("cooperative")])
    entrypoints = [Entrypoint("blocking", blocking), Entrypoint("cooperative", cooperative)]
    await drain(Worker(backend, entrypoints, fast_settings()))

    loop_thread = threading.get_ident()
    assert threads["async"] == loop_thread
    assert threads["sync"] != loop_thread


# --- concurrency and rate limits ----------------------------------------------------------------------------


async def test_no_more_jobs_run_at_once_than_the_worker_concurrency(backend: Backend, client: Client) -> None:
    overlap = Overlap()

    async def handler(job: Job) -> None:
        await overlap.run(0.15)

    await client.enqueue_many([JobSpec("work") for _ in range(9)])
    await drain(Worker(backend, [Entrypoint("work", handler)], fast_settings(concurrency=3, batch_size=10)))

    assert overlap.done == 9
    assert overlap.most == 3


class RanJobs(list[int]):
    """A handler that notes the id of every job it runs."""

    async def __call__(self, job: Job) -> None:
        self.append(job.id)


class HeldJobs:
    """A handler whose jobs run until the test releases them (``release.set()``)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        await self.release.wait()


async def serve_until_ran(worker: Worker, ran: RanJobs, count: int, held: HeldJobs) -> None:
    """Serves jobs with ``worker`` until ``ran`` has run ``count``, then lets the held jobs end: the worker stops
    at once rather than after its grace period."""

    async def ran_all() -> bool:
        return len(ran) >= count

    try:
        async with running_worker(worker):
            await wait_until(ran_all, timeout=10, what=f"{count} jobs run")
            held.release.set()
    finally:
        held.release.set()


class SlowClaims:
    """A backend whose claims take 20 ms, counting how many are under way at once."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.under_way = 0
        self.most_under_way = 0
        self.calls = 0
        self.asked: list[tuple[int, int]] = []  # (claims under way when it was sent, jobs asked for)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def claim(self, *args: Any) -> Any:
        self.calls += 1
        self.asked.append((self.under_way, args[1]))
        self.under_way += 1
        self.most_under_way = max(self.most_under_way, self.under_way)
        try:
            await asyncio.sleep(0.02)
            return await self._backend.claim(*args)
        finally:
            self.under_way -= 1


async def test_a_deep_queue_keeps_two_claims_under_way_and_an_idle_one_a_single_claim(
    backend: Backend, client: Client
) -> None:
    slow = SlowClaims(backend)
    ran = RanJobs()

    async def ran_all(count: int) -> bool:
        return len(ran) == count

    async def claim_ended() -> bool:
        return slow.calls > 0 and slow.under_way == 0

    settings = fast_settings(concurrency=20, batch_size=5, poll_interval=5)
    worker = Worker(slow, [Entrypoint("work", ran)], settings)  # type: ignore[arg-type]
    await client.enqueue_many([JobSpec("work") for _ in range(200)])
    async with running_worker(worker):
        await wait_until(lambda: ran_all(200), timeout=10, what="200 jobs")
        assert slow.most_under_way == 2

        async def settled() -> bool:  # the newest claim found the queue empty, and none is under way
            state = worker.state
            return not state.claiming and not state.last_found and not worker.running and slow.under_way == 0

        await wait_until(settled, timeout=5, what="the claims that found the queue empty to end")
        slow.most_under_way, slow.calls = 0, 0
        for _ in range(3):
            await client.enqueue("work")
            await wait_until(claim_ended, timeout=5, what="the claim to end")
            await asyncio.sleep(0.05)
    assert len(ran) == 203
    # Woken for one job at a time, the worker asks once per wake-up: it does not double its claims when idle.
    assert slow.most_under_way == 1
    assert slow.calls <= 4


async def test_a_second_claim_under_way_asks_for_half_a_batch_or_more(backend: Backend, client: Client) -> None:
    slow = SlowClaims(backend)
    ran = RanJobs()

    async def ran_all() -> bool:
        return len(ran) == 300

    # 12 slots, batches of 5: two claims under way leave 2 slots that a claim of 2 would have asked for.
    worker = Worker(slow, [Entrypoint("work", ran)], fast_settings(concurrency=12, batch_size=5))  # type: ignore[arg-type]
    await client.enqueue_many([JobSpec("work") for _ in range(300)])
    async with running_worker(worker):
        await wait_until(ran_all, timeout=10, what="300 jobs")
    second_claims = [asked for under_way, asked in slow.asked if under_way]
    assert second_claims, "the deep queue never had two claims under way"
    assert min(second_claims) >= 3


class PairedClaims:
    """A backend whose claim replies come back two at a time, in one turn of the event loop (as two replies read
    from the socket at once do), or alone after 50 ms; it notes how many jobs each claim asked for."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.asked: list[int] = []
        self._held: list[asyncio.Future[None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def claim(self, *args: Any) -> Any:
        self.asked.append(args[1])
        result = await self._backend.claim(*args)
        if self._held:
            for other in self._held:
                other.set_result(None)
            self._held.clear()
            return result
        held = asyncio.get_running_loop().create_future()
        self._held.append(held)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(held), 0.05)
        if held in self._held:
            self._held.remove(held)
        return result


async def test_jobs_holding_slots_do_not_shrink_the_claims_of_quick_ones(backend: Backend, client: Client) -> None:
    paired = PairedClaims(backend)
    ran = RanJobs()
    hold = HeldJobs()
    # 16 slots, batches of 5, three held by long jobs: two claims that come back together start ten quick jobs,
    # which end in their first step. Until they have had it, only 3 slots look free.
    entrypoints = [Entrypoint("hold", hold), Entrypoint("work", ran)]
    worker = Worker(paired, entrypoints, fast_settings(concurrency=16, batch_size=5))  # type: ignore[arg-type]
    await client.enqueue_many([JobSpec("hold", priority=9) for _ in range(3)])
    await client.enqueue_many([JobSpec("work") for _ in range(300)])
    await serve_until_ran(worker, ran, 300, hold)
    # The last claims find the queue empty whatever they ask: look at those of the drain.
    assert len(paired.asked) > 40
    assert set(paired.asked[: 300 // 5]) == {5}


async def test_a_worker_with_max_jobs_runs_that_many_then_retires_with_its_loop_still_turning(
    backend: Backend, client: Client
) -> None:
    ran = RanJobs()

    await client.enqueue_many([JobSpec("work") for _ in range(100)])
    worker = Worker(backend, [Entrypoint("work", ran)], fast_settings(concurrency=10, batch_size=5, max_jobs=20))
    async with running_worker(worker):
        await asyncio.wait_for(worker.retiring.wait(), timeout=5)
        # A loop that spins without awaiting would starve this sleep and the heartbeat alike.
        began = time.monotonic()
        await asyncio.sleep(0.05)
        assert time.monotonic() - began < 1.0
        assert len(ran) == 20
    assert len(ran) == 20


async def test_draining_with_max_jobs_returns_once_that_many_have_run(backend: Backend, client: Client) -> None:
    ran = RanJobs()

    ids = await client.enqueue_many([JobSpec("work") for _ in range(30)])
    worker = Worker(backend, [Entrypoint("work", ran)], fast_settings(concurrency=10, batch_size=5, max_jobs=10))
    await drain(worker, timeout=5)
    assert len(ran) == 10
    assert worker.retiring.is_set()
    states = await client.status(job_id for job_id in ids if job_id is not None)
    assert [state.status for state in states.values()].count("queued") == 20


async def test_jobs_of_an_entrypoint_limited_to_one_never_overlap_even_across_workers(
    backend: Backend, client: Client
) -> None:
    overlap = Overlap()

    async def handler(job: Job) -> None:
        await overlap.run(0.05)

    def worker() -> Worker:
        entrypoint = Entrypoint("serial", handler, concurrency_limit=1)
        return Worker(backend, [entrypoint], fast_settings(concurrency=5, batch_size=5))

    ids = await client.enqueue_many([JobSpec("serial") for _ in range(6)])
    async with running_worker(worker()), running_worker(worker()):
        for job_id in ids:
            assert (await final_state(client, job_id)).status == "successful"

    assert overlap.done == 6
    assert overlap.most == 1


async def test_busy_workers_pass_a_concurrency_limited_entrypoints_slots_from_job_to_job(
    backend: Backend, client: Client
) -> None:
    overlap = Overlap()

    async def capped(job: Job) -> None:
        await overlap.run(0.01)

    async def bulk(job: Job) -> None:
        await asyncio.sleep(0.01)

    def worker() -> Worker:
        entrypoints = [Entrypoint("capped", capped, concurrency_limit=2), Entrypoint("bulk", bulk)]
        return Worker(backend, entrypoints, fast_settings(concurrency=5, batch_size=5))

    events: list[Event] = []
    subscription = await backend.subscribe(events.append)
    try:
        # A backlog of other work (after the limited jobs, in the claims' order) keeps both workers' claims full
        # while the limited jobs run.
        ids = await client.enqueue_many([JobSpec("capped") for _ in range(40)])
        await client.enqueue_many([JobSpec("bulk") for _ in range(2000)])
        async with running_worker(worker()), running_worker(worker()):
            for job_id in ids:
                assert (await final_state(client, job_id)).status == "successful"
            events_then = [event.kind for event in events]
    finally:
        await subscription.close()
    assert overlap.done == 40
    assert overlap.most <= 2
    # Each job's end claimed the next in the same write: a slot was free (and announced) only once nothing was
    # left to take it, rather than at the end of each of the 40 jobs.
    assert events_then.count("slot") <= 6


async def test_a_worker_that_handed_slots_over_asks_for_its_limited_entrypoint_again_once_they_are_free(
    backend: Backend, client: Client
) -> None:
    overlap = Overlap()
    bulk_done = RanJobs()

    async def capped(job: Job) -> None:
        await overlap.run(0.005)

    async def bulk(job: Job) -> None:
        await asyncio.sleep(0.005)
        bulk_done.append(job.id)

    # The worker counts the slots its own jobs hold, and leaves a limit they fill out of its claims. Slots handed
    # from job to job while the backlog lasts, then freed, must all be counted back: else "capped" would look
    # full for good, and the jobs enqueued once the worker is idle would never be claimed.
    entrypoints = [Entrypoint("capped", capped, concurrency_limit=2), Entrypoint("bulk", bulk)]
    worker = Worker(backend, entrypoints, fast_settings(concurrency=5, batch_size=5))
    await client.enqueue_many([JobSpec("capped") for _ in range(20)])
    await client.enqueue_many([JobSpec("bulk") for _ in range(300)])
    async with running_worker(worker):

        async def backlog_done() -> bool:
            return overlap.done == 20 and len(bulk_done) == 300

        await wait_until(backlog_done, timeout=30, what="the backlog run")
        later = await client.enqueue_many([JobSpec("capped") for _ in range(3)])
        for job_id in later:
            assert (await final_state(client, job_id)).status == "successful"
    assert overlap.done == 23
    assert overlap.most <= 2


class HeldReplies:
    """A backend whose writes of outcomes are applied at once but answered only when ``answer`` is set."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.written = asyncio.Event()
        self.answer = asyncio.Event()

    async def record(self, *args: Any, **kwargs: Any) -> Any:
        done = await self._backend.record(*args, **kwargs)
        if done.successors:
            self.written.set()
            await self.answer.wait()
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


async def test_jobs_handed_over_to_a_worker_that_stops_meanwhile_go_back_to_the_queue_unrun(
    backend: Backend, client: Client
) -> None:
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    async def slow_bulk(job: Job) -> None:
        await asyncio.sleep(0.05)

    first, second = await client.enqueue_many([JobSpec("capped"), JobSpec("capped")])
    await client.enqueue_many([JobSpec("bulk") for _ in range(500)])  # claims come back full
    held = HeldReplies(backend)
    entrypoints = [Entrypoint("capped", handler, concurrency_limit=1), Entrypoint("bulk", slow_bulk)]
    worker = Worker(held, entrypoints, fast_settings(concurrency=4, batch_size=2))  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(held.written.wait(), timeout=5)  # the first job's end handed its slot to the second
        worker.stop(1.0)
        held.answer.set()
        await asyncio.wait_for(task, timeout=5)
    finally:
        held.answer.set()
        worker.stop(0)
        await asyncio.wait_for(task, timeout=5)
    assert ran == [first]
    state = await state_of(client, second)
    assert (state.status, state.attempts) == ("queued", 0)


async def test_a_rate_limit_bounds_how_many_jobs_start_per_second(backend: Backend, client: Client) -> None:
    starts: list[float] = []

    async def handler(job: Job) -> None:
        starts.append(time.monotonic())

    await client.enqueue_many([JobSpec("limited") for _ in range(20)])
    entrypoint = Entrypoint("limited", handler, rate_limit=Rate(5, 1.0))
    began = time.monotonic()
    async with running_worker(Worker(backend, [entrypoint], fast_settings())):
        # Tokens come back at 5 per second, so the worker must wake up for them rather than wait for a poll.
        async def refilled_tokens_used() -> bool:
            return len(starts) >= 9

        await wait_until(refilled_tokens_used, timeout=5, what="jobs started on refilled tokens")
        await asyncio.sleep(max(began + 1.5 - time.monotonic(), 0))

    # 5 at once (the burst), then one every 0.2 s: at most 5 + 1.5 * 5 in the first 1.5 s, whatever the speed
    # of the machine (a slow one only starts fewer).
    in_window = [t for t in starts if t - began <= 1.5]
    assert len(in_window) <= 13
    assert len(starts) < 20


class ClaimsNaming:
    """A backend that notes the limited entrypoints each claim names."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.named: list[set[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def claim(self, worker_id: int, batch: int, limits: list[EntrypointLimit], **options: Any) -> Any:
        self.named.append({limit.name for limit in limits if limit.limited})
        return await self._backend.claim(worker_id, batch, limits, **options)


async def test_a_rate_limits_tokens_do_not_reopen_a_full_limit(backend: Backend, client: Client) -> None:
    naming = ClaimsNaming(backend)
    rated = RanJobs()

    # Another worker holds the only slot of "held", with two more of its jobs queued; "rated" gets a token every
    # 20 ms, and the worker wakes up for each. The claims at those wake-ups are for the rate limit's gate: "held"
    # stays closed until its own gate's time (REOPEN_AFTER, 0.1 s) or a poll (0.2 s here). An unlimited
    # entrypoint is always asked for, so a claim never finds every entrypoint closed (and then asks for all).
    other = await backend.register_worker(WorkerInfo("other-host", 999_997, ("held",)))
    await client.enqueue_many([JobSpec("held") for _ in range(3)])
    assert len((await backend.claim(other, 1, [EntrypointLimit("held", concurrency=1)])).jobs) == 1
    await client.enqueue_many([JobSpec("rated") for _ in range(40)])
    entrypoints = [
        Entrypoint("plain", RanJobs()),
        Entrypoint("held", RanJobs(), concurrency_limit=1),
        Entrypoint("rated", rated, rate_limit=Rate(50, 1.0, burst=1)),
    ]
    # The other worker beat when it registered: it is not presumed dead during the test.
    settings = fast_settings(batch_size=1, concurrency=4, worker_timeout=60.0)
    await serve_until_ran(Worker(naming, entrypoints, settings), rated, 40, HeldJobs())  # type: ignore[arg-type]
    naming_rated = sum("rated" in named for named in naming.named)
    naming_held = sum("held" in named for named in naming.named)
    assert naming_rated >= 35
    # Before, every one of the rate limit's wake-ups reopened "held" too: as many claims named both.
    assert naming_held * 2 < naming_rated, (naming_held, naming_rated)


async def test_claims_leave_out_a_concurrency_limit_the_workers_own_jobs_fill(backend: Backend, client: Client) -> None:
    naming = ClaimsNaming(backend)
    hold = HeldJobs()
    done = RanJobs()

    async def slow(job: Job) -> None:
        await asyncio.sleep(0.01)
        done.append(job.id)

    # The first claim takes the job that fills "held"'s only slot, here, for the rest of the test. The other
    # claims, one per slow job for about a second, could take nothing of it: its gate's time (0.1 s) and
    # the polls (0.2 s here) would each have named it again.
    entrypoints = [Entrypoint("held", hold, concurrency_limit=1), Entrypoint("slow", slow)]
    await client.enqueue_many([JobSpec("held", priority=9) for _ in range(3)])
    await client.enqueue_many([JobSpec("slow") for _ in range(200)])
    worker = Worker(naming, entrypoints, fast_settings(batch_size=1, concurrency=3))  # type: ignore[arg-type]
    await serve_until_ran(worker, done, 200, hold)
    assert len(naming.named) > 150
    assert sum("held" in named for named in naming.named[:150]) <= CLAIMS_IN_FLIGHT


async def test_a_worker_whose_own_jobs_fill_every_limit_it_serves_sends_no_claim(
    backend: Backend, client: Client
) -> None:
    naming = ClaimsNaming(backend)
    hold = HeldJobs()
    started = RanJobs()

    async def held(job: Job) -> None:
        started.append(job.id)
        await hold(job)

    # The worker serves one entrypoint, whose two slots its own jobs fill. Each of the jobs enqueued next sends a
    # notification, and a poll comes every 0.2 s: a claim could take none of them until a slot frees.
    await client.enqueue_many([JobSpec("held") for _ in range(2)])
    worker = Worker(naming, [Entrypoint("held", held, concurrency_limit=2)], fast_settings(concurrency=4))

    async def settled() -> bool:
        return not worker.state.may_have_work and not worker.state.claiming

    async def both_started() -> bool:
        return len(started) == 2 and await settled()

    try:
        async with running_worker(worker):
            await wait_until(both_started, timeout=10, what="the limit filled")
            claims = len(naming.named)
            for _ in range(10):
                notices = worker.gates.notices

                async def noticed(notices: int = notices) -> bool:
                    return worker.gates.notices > notices and await settled()

                await client.enqueue("held")
                await wait_until(noticed, timeout=10, what="the notification acted on")
            assert len(naming.named) == claims
            hold.release.set()

            async def all_started() -> bool:
                return len(started) == 12

            await wait_until(all_started, timeout=10, what="the jobs enqueued since run")
    finally:
        hold.release.set()


# --- liveness and rescue ------------------------------------------------------------------------------------


class FailingHeartbeats:
    """A backend whose heartbeats fail while ``failing`` is set, as when the database cannot be reached."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.failing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def heartbeat(self, *args: Any) -> Any:
        if self.failing:
            raise BackendUnavailable("database unavailable: heartbeat refused on purpose")
        return await self._backend.heartbeat(*args)


async def test_a_worker_whose_heartbeat_cannot_be_written_claims_nothing_until_one_is(
    backend: Backend, client: Client
) -> None:
    ran = RanJobs()
    flaky = FailingHeartbeats(backend)
    settings = fast_settings(worker_timeout=1.0, heartbeat_interval=0.1)
    worker = Worker(flaky, [Entrypoint("work", ran)], settings)  # type: ignore[arg-type]
    async with running_worker(worker):

        async def stopped_claiming() -> bool:
            return not worker.state.heartbeat_ok

        await wait_until(stopped_claiming, timeout=5, what="the worker to stop claiming")
        job_id = await client.enqueue("work")
        claims_before = worker.state.claims_sent
        await asyncio.sleep(0.5)  # polls and the enqueue notification come and go: no claim
        assert worker.state.claims_sent == claims_before
        assert ran == []

        flaky.failing = False
        assert (await final_state(client, job_id)).status == "successful"
        assert worker.state.heartbeat_ok
    assert ran == [job_id]


async def test_jobs_of_a_worker_whose_heartbeat_went_stale_are_rescued_and_run_again(
    backend: Backend, client: Client, time_passes: TimePasses
) -> None:
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(job.attempts)

    ghost = await backend.register_worker(WorkerInfo("ghost-host", 999_999, ("rescued",)))
    job_id = await client.enqueue("rescued")
    claimed = await backend.claim(ghost, 5, [EntrypointLimit("rescued")])
    assert [job.id for job in claimed.jobs] == [job_id]
    assert (await state_of(client, job_id)).status == "picked"
    assert await backend.rescue_stale(worker_timeout=30) == [], "a worker that beat recently is alive"

    await time_passes(0.7)
    assert await backend.rescue_stale(worker_timeout=0.5) == [job_id]
    assert (await state_of(client, job_id)).status == "queued"

    await drain(Worker(backend, [Entrypoint("rescued", handler)], fast_settings()))
    state = await state_of(client, job_id)
    assert state.status == "successful"
    assert attempts == [1]  # a worker's death never spends a retry attempt


async def test_rescuing_a_dead_worker_requeues_its_jobs_at_once(backend: Backend, client: Client) -> None:
    async def handler(job: Job) -> None:
        return None

    ghost = await backend.register_worker(WorkerInfo("ghost-host", 999_998, ("rescued",)))
    ids = await client.enqueue_many([JobSpec("rescued"), JobSpec("rescued")])
    claimed = await backend.claim(ghost, 5, [EntrypointLimit("rescued")])
    assert sorted(job.id for job in claimed.jobs) == sorted(i for i in ids if i is not None)

    assert sorted(await backend.rescue_worker(ghost, "killed by signal 9")) == sorted(i for i in ids if i is not None)
    states = await client.status([i for i in ids if i is not None])
    assert {state.status for state in states.values()} == {"queued"}

    await drain(Worker(backend, [Entrypoint("rescued", handler)], fast_settings()))
    states = await client.status([i for i in ids if i is not None])
    assert {state.status for state in states.values()} == {"successful"}


async def test_a_job_whose_runs_keep_dying_with_their_worker_is_given_up(backend: Backend, client: Client) -> None:
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    poison_id = await client.enqueue("fragile")
    survivor_id = await client.enqueue("fragile")
    # Two deaths with both jobs picked charge neither, and make both suspects; then the poison, run alone, kills a
    # third worker: with max_worker_deaths=1 that death spends its budget and the job is given up.
    fragile = [EntrypointLimit("fragile", max_worker_deaths=1)]
    for lost, isolated in enumerate((False, False, True)):
        ghost = await backend.register_worker(WorkerInfo("ghost-host", 999_000 + lost, ("fragile",)))
        claimed = await backend.claim(ghost, 2, fragile, isolated=isolated)
        assert len(claimed.jobs) == (1 if isolated else 2)
        await backend.rescue_worker(ghost, "killed by signal 11")
        assert (await state_of(client, survivor_id)).attempts == 0
    assert (await state_of(client, survivor_id)).status == "suspect"

    entrypoint = Entrypoint("fragile", handler, retry=RetryPolicy(max_attempts=1), max_worker_deaths=1)
    await drain(Worker(backend, [entrypoint], fast_settings(concurrency=1, batch_size=1)))

    poison = await state_of(client, poison_id)
    assert poison.status == "exception"
    assert poison.error is not None
    assert poison.error.type == "pgqd.WorkerLost"
    assert "killed by signal 11" in poison.error.message
    survivor = await state_of(client, survivor_id)
    assert survivor.status == "successful"
    assert survivor.attempts == 1
    assert ran == [survivor_id]


async def test_a_job_is_never_claimed_twice_while_its_owner_is_alive(backend: Backend, client: Client) -> None:
    first = await backend.register_worker(WorkerInfo("host-a", 1, ("shared", "capped")))
    second = await backend.register_worker(WorkerInfo("host-b", 2, ("shared", "capped")))
    ids = await client.enqueue_many([JobSpec("shared") for _ in range(10)])
    limits = [EntrypointLimit("shared")]

    a, b = await asyncio.gather(backend.claim(first, 4, limits), backend.claim(second, 4, limits))
    taken_a, taken_b = {job.id for job in a.jobs}, {job.id for job in b.jobs}
    assert len(taken_a) == len(taken_b) == 4
    assert not taken_a & taken_b

    rest = await backend.claim(first, 10, limits)
    taken_rest = {job.id for job in rest.jobs}
    assert taken_rest == set(ids) - taken_a - taken_b
    assert (await backend.claim(second, 10, limits)).jobs == []

    # Both owners are alive, so nothing is rescued and nothing can be claimed again.
    await backend.heartbeat(first, WorkerInfo("host-a", 1, ("shared", "capped")))
    await backend.heartbeat(second, WorkerInfo("host-b", 2, ("shared", "capped")))
    assert await backend.rescue_stale(worker_timeout=30) == []
    assert (await backend.claim(second, 10, limits)).jobs == []

    # A fleet-wide concurrency limit holds across the claims of both workers.
    await client.enqueue_many([JobSpec("capped") for _ in range(10)])
    capped = [EntrypointLimit("capped", concurrency=3)]
    c, d = await asyncio.gather(backend.claim(first, 10, capped), backend.claim(second, 10, capped))
    assert len(c.jobs) + len(d.jobs) == 3
    assert not {job.id for job in c.jobs} & {job.id for job in d.jobs}


# --- shutdown -----------------------------------------------------------------------------------------------


async def test_stopping_releases_jobs_that_outlive_the_grace_period_without_counting_the_attempt(
    backend: Backend, client: Client
) -> None:
    started: set[str] = set()
    gate = asyncio.Event()

    async def handler(job: Job) -> None:
        started.add(job.text() or "")
        if job.text() == "long":
            await asyncio.sleep(30)
        else:
            await asyncio.wait_for(gate.wait(), 10)

    worker = Worker(backend, [Entrypoint("work", handler)], fast_settings(shutdown_timeout=10))
    long_id = await client.enqueue("work", "long")
    short_id = await client.enqueue("work", "short")
    task = asyncio.create_task(worker.run())
    try:

        async def both_started() -> bool:
            return started == {"long", "short"}

        await wait_until(both_started, timeout=5, what="both jobs to start")
        stopped_at = time.monotonic()
        worker.stop(grace=0.3)
        gate.set()  # the short job finishes within the grace period
        await asyncio.wait_for(task, 5)
        took = time.monotonic() - stopped_at
    finally:
        if not task.done():
            task.cancel()

    assert took < 3
    released = await state_of(client, long_id)
    assert released.status == "queued"
    assert released.attempts == 0
    assert (await state_of(client, short_id)).status == "successful"


# --- bad input ----------------------------------------------------------------------------------------------


async def test_invalid_json_payload_fails_the_job_and_not_the_worker(backend: Backend, client: Client) -> None:
    seen: list[Any] = []

    async def handler(job: Job) -> None:
        seen.append(job.json())

    bad_id = await client.enqueue("parse", b"{not json")
    good_id = await client.enqueue("parse", {"fine": True})
    await drain(Worker(backend, [Entrypoint("parse", handler)], fast_settings(concurrency=1)))

    bad = await state_of(client, bad_id)
    assert bad.status == "exception"
    assert bad.error is not None
    assert bad.error.type.endswith("InvalidPayload")
    assert "not valid JSON" in bad.error.message
    assert (await state_of(client, good_id)).status == "successful"
    assert seen == [{"fine": True}]


async def test_handlers_raising_systemexit_or_keyboardinterrupt_fail_their_job_and_the_worker_goes_on(
    backend: Backend, client: Client
) -> None:
    ran: list[str] = []

    async def interrupt(job: Job) -> None:
        raise KeyboardInterrupt

    def exit_process(job: Job) -> None:
        raise SystemExit(3)

    async def normal(job: Job) -> None:
        ran.append("normal")

    interrupt_id = await client.enqueue("interrupt", priority=2)
    exit_id = await client.enqueue("exit", priority=1)
    normal_id = await client.enqueue("normal", priority=0)
    entrypoints = [Entrypoint("interrupt", interrupt), Entrypoint("exit", exit_process), Entrypoint("normal", normal)]
    await drain(Worker(backend, entrypoints, fast_settings(concurrency=1, batch_size=1)))

    interrupted = await state_of(client, interrupt_id)
    assert interrupted.status == "exception"
    assert interrupted.error is not None
    assert interrupted.error.type == "KeyboardInterrupt"
    exited = await state_of(client, exit_id)
    assert exited.status == "exception"
    assert exited.error is not None
    assert exited.error.type == "SystemExit"
    assert exited.error.message == "3"
    assert (await state_of(client, normal_id)).status == "successful"
    assert ran == ["normal"]


# --- pause and resume ---------------------------------------------------------------------------------------


async def test_a_paused_entrypoint_waits_while_others_run_and_resuming_wakes_an_idle_worker_at_once(
    backend: Backend, client: Client
) -> None:
    ran: list[tuple[str, int]] = []

    async def record(job: Job) -> None:
        ran.append((job.entrypoint, job.json()))

    await client.enqueue_many([JobSpec("mail", n) for n in range(3)] + [JobSpec("report", n) for n in range(3)])
    state = await client.pause("mail")
    assert state.is_paused("mail")
    assert not state.is_paused("report")
    # A poll far longer than the test: only the wake-up sent by resume can make the worker claim again.
    settings = fast_settings(poll_interval=60.0)
    entrypoints = [Entrypoint(name, record) for name in ("mail", "report")]
    async with running_worker(Worker(backend, entrypoints, settings)):
        await wait_until(lambda: _done(ran, "report", 3), timeout=10, what="the report jobs to run")
        late = await client.enqueue("mail", 3)  # enqueueing into a paused entrypoint still works
        assert (await state_of(client, late)).status == "queued"
        assert [e for e, _ in ran] == ["report"] * 3

        assert not (await client.resume("mail")).is_paused("mail")
        await wait_until(lambda: _done(ran, "mail", 4), timeout=5, what="the mail jobs to run after resume")
    assert sorted(n for e, n in ran if e == "mail") == [0, 1, 2, 3]


async def _done(ran: list[tuple[str, int]], entrypoint: str, count: int) -> bool:
    return sum(1 for e, _ in ran if e == entrypoint) >= count


async def test_pause_all_covers_entrypoints_not_seen_yet_and_resuming_one_exempts_it(
    backend: Backend, client: Client
) -> None:
    worker = await backend.register_worker(WorkerInfo("h", 1, ["a", "b"]))
    limits = [EntrypointLimit("a"), EntrypointLimit("b")]
    state = await client.pause(all=True)
    assert state.all_paused
    assert state.is_paused("never-seen")
    await client.enqueue_many([JobSpec("a"), JobSpec("b"), JobSpec("b", execute_after=timedelta(seconds=0.1))])
    await asyncio.sleep(0.2)  # the deferred job is due now
    nothing = await backend.claim(worker, 10, limits)
    # Nothing claimed, and no wake-up hint for the due job of a paused entrypoint (an idle worker would spin).
    assert (nothing.jobs, nothing.due_in, nothing.throttled_in) == ([], None, None)

    state = await client.resume("a")
    assert (state.all_paused, state.is_paused("a"), state.is_paused("b")) == (True, False, True)
    assert [j.entrypoint for j in (await backend.claim(worker, 10, limits)).jobs] == ["a"]

    assert (await client.pause("a")).is_paused("a")
    state = await client.resume(all=True)
    assert (state.all_paused, state.paused, state.excepted) == (False, frozenset(), frozenset())
    assert [j.entrypoint for j in (await backend.claim(worker, 10, limits)).jobs] == ["b", "b"]


async def test_pausing_all_again_drops_the_exceptions_and_named_pauses_stack_on_it(client: Client) -> None:
    await client.pause(all=True)
    await client.resume("a")
    state = await client.pause(all=True)
    assert state.is_paused("a")
    assert state.excepted == frozenset()
    state = await client.pause("b", "b", "c")
    assert state.paused == {"b", "c"}
    state = await client.resume("b", all=False)  # while all are paused, b is exempted; c stays paused
    assert (state.all_paused, state.is_paused("b"), state.is_paused("c")) == (True, False, True)
    assert (await client.resume(all=True)) == await client.paused()
    assert not (await client.paused()).is_paused("c")


async def test_jobs_running_when_their_entrypoint_is_paused_finish(backend: Backend, client: Client) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> str:
        started.set()
        await asyncio.wait_for(release.wait(), 10)
        return "done"

    job_id = await client.enqueue("slow")
    async with running_worker(Worker(backend, [Entrypoint("slow", handler)], fast_settings())):
        await asyncio.wait_for(started.wait(), 10)
        await client.pause("slow")
        release.set()
        assert (await final_state(client, job_id)).status == "successful"


@pytest.mark.parametrize(
    ("names", "everything", "message"),
    [
        ((), False, "name at least one entrypoint"),
        (("a",), True, "not both"),
        (("",), False, "non-empty strings"),
        (("*",), False, "pass all=True"),
    ],
)
async def test_pause_and_resume_refuse_unclear_targets(
    client: Client, names: tuple[str, ...], everything: bool, message: str
) -> None:
    for call in (client.pause, client.resume):
        with pytest.raises(PgqdError, match=message):
            await call(*names, all=everything)
    assert await client.paused() == PauseState()


@pytest.mark.parametrize("reason", ["cancel", "shutdown"])
async def test_a_run_stopped_before_it_began_still_ends_once_with_its_outcome(reason: str) -> None:
    started: list[int] = []

    async def handler(job: Job) -> None:
        started.append(job.id)

    now = time.time()
    claimed = ClaimedJob(7, "work", None, None, 0, 1, now, now, now, False)
    ended: list[Outcome] = []
    with ThreadPoolExecutor(1) as executor:
        run = JobRun.of_claim(
            claimed, PreparedHandler.prepare(Entrypoint("work", handler)), None, time.monotonic(), executor, 1,
            lambda _run, outcome: ended.append(outcome),
        )  # fmt: skip
        run.task = asyncio.get_running_loop().create_task(run.run())
        run.stop(reason)  # type: ignore[arg-type]
        outcome = await asyncio.wait_for(run.task, timeout=5)
    assert started == []
    assert ended == [outcome]
    expected = Finished(7, "canceled") if reason == "cancel" else Unfinished(7, "release")
    assert outcome == expected
