"""The storage port's conformance suite, worker and schedule side: one section per ``Backend`` method, each test
run on PostgreSQL and on the in-memory backend (the ``backend`` fixture). The rescues' quarantine is in
tests/test_quarantine.py; schedules' misfire and race rules in tests/test_schedules.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqd import BackendUnavailable, MemoryBackend
from pgqd.backend.base import Backend
from pgqd.daemon.worker.scheduler import ScheduleSpec, definitions
from pgqd.models import EntrypointLimit, ErrorInfo, Finished, HandOver, NewJob, Recorded, Unfinished
from tests.support.port import Events, enqueue_ids, info, new, plain, worker
from tests.support.time_passes import TimePasses
from tests.support.waiting import wait_until

# --- register_worker ------------------------------------------------------------------------------------------


async def test_each_registered_worker_gets_its_own_id(backend: Backend) -> None:
    ids = [await worker(backend, pid) for pid in (1, 2, 3)]
    assert len(set(ids)) == 3
    assert all(isinstance(worker_id, int) and worker_id > 0 for worker_id in ids)


# --- heartbeat ------------------------------------------------------------------------------------------------


async def test_a_heartbeat_keeps_a_worker_alive_and_brings_back_one_presumed_dead(
    backend: Backend, time_passes: TimePasses
) -> None:
    owner = await worker(backend)
    [job_id] = await enqueue_ids(backend, [new()])
    await backend.claim(owner, 1, plain())
    await time_passes(0.4)
    reply = await backend.heartbeat(owner, info())
    assert reply.cancel == []
    assert not reply.suspects
    assert await backend.rescue_stale(worker_timeout=0.3) == []  # it just beat
    # Forgotten (its row deleted), the next beat registers it again under the same id.
    await backend.deregister_worker(owner)
    await backend.heartbeat(owner, info())
    await time_passes(0.1)
    assert await backend.rescue_stale(worker_timeout=0.3) == []
    assert (await backend.job_states([job_id]))[job_id].status == "picked"


# --- deregister_worker ----------------------------------------------------------------------------------------


async def test_a_deregistered_workers_jobs_are_rescued_once_they_are_older_than_the_timeout(
    backend: Backend, time_passes: TimePasses
) -> None:
    owner = await worker(backend)
    [job_id] = await enqueue_ids(backend, [new()])
    await backend.claim(owner, 1, plain())
    await backend.deregister_worker(owner)
    assert await backend.rescue_stale(worker_timeout=0.3) == []  # picked too recently
    await time_passes(0.4)
    assert await backend.rescue_stale(worker_timeout=0.3) == [job_id]
    assert (await backend.job_states([job_id]))[job_id].status == "queued"


# --- claim ----------------------------------------------------------------------------------------------------


async def test_a_claim_takes_the_batch_in_priority_then_fifo_order_and_marks_it_picked(backend: Backend) -> None:
    low, high, other, low2, due_later = await enqueue_ids(
        backend, [new(), new(priority=5), new("other"), new(), new(delay=3600.0)]
    )
    owner = await worker(backend)
    first = await backend.claim(owner, 2, plain())
    assert [job.id for job in first.jobs] == [high, low]
    assert all(job.attempts == 1 and job.created_s <= job.picked_s for job in first.jobs)
    assert not first.suspects
    rest = await backend.claim(owner, 10, plain())
    assert [job.id for job in rest.jobs] == [low2]  # not the other entrypoint's, nor the deferred one
    assert rest.due_in is not None
    assert 3500 < rest.due_in <= 3600
    states = await backend.job_states([low, high, other, due_later])
    assert [states[i].status for i in (low, high, other, due_later)] == ["picked", "picked", "queued", "deferred"]


async def test_a_claim_honours_concurrency_and_rate_limits_and_says_when_tokens_return(backend: Backend) -> None:
    await enqueue_ids(backend, [new("capped") for _ in range(5)] + [new("paced") for _ in range(5)])
    owner = await worker(backend, entrypoints=("capped", "paced"))
    limits = [EntrypointLimit("capped", concurrency=2), EntrypointLimit("paced", rate_per_second=1.0, burst=2.0)]
    result = await backend.claim(owner, 10, limits)
    taken = [job.entrypoint for job in result.jobs]
    assert taken.count("capped") == 2
    assert taken.count("paced") == 2
    assert result.throttled_in is not None
    assert 0 < result.throttled_in <= 1.0
    again = await backend.claim(owner, 10, limits)
    assert again.jobs == []


async def test_a_deferred_job_is_claimed_once_it_is_due(backend: Backend, time_passes: TimePasses) -> None:
    [job_id] = await enqueue_ids(backend, [new(delay=0.3)])
    owner = await worker(backend)
    assert (await backend.claim(owner, 1, plain())).jobs == []
    await time_passes(0.4)
    assert [job.id for job in (await backend.claim(owner, 1, plain())).jobs] == [job_id]


# --- record ---------------------------------------------------------------------------------------------------


async def test_record_logs_finished_jobs_and_puts_retried_held_and_released_ones_back(backend: Backend) -> None:
    done, retried, later, held, released = await enqueue_ids(backend, [new() for _ in range(5)])
    owner = await worker(backend)
    await backend.claim(owner, 5, plain())
    error = ErrorInfo("ValueError", "bad", "Traceback ...")
    outcomes = [
        Finished(done, "exception", started_after=0.01, duration=0.02, error=error),
        Unfinished(retried, "retry", 0.0, error),
        Unfinished(later, "retry", 3600.0, error),
        Unfinished(held, "hold", 0.0, error),
        Unfinished(released, "release"),
    ]
    assert (await backend.record(owner, outcomes, [])).applied == 5
    states = await backend.job_states([done, retried, later, held, released])
    assert [states[i].status for i in (done, retried, later, held, released)] == [
        "exception",
        "queued",
        "deferred",
        "failed",
        "queued",
    ]
    assert states[done].error == error
    assert states[held].error == error
    assert [states[i].attempts for i in (retried, held, released)] == [1, 1, 0]  # a release is not counted


async def test_record_keeps_each_finished_jobs_own_status_in_one_write(backend: Backend) -> None:
    ids = await enqueue_ids(backend, [new() for _ in range(8)])
    owner = await worker(backend)
    await backend.claim(owner, 8, plain())
    # Successes among other ends, and a write of successes alone (sent without a status each, for PostgreSQL).
    statuses = ["successful", "timeout", "successful", "canceled", "exception", "successful"]
    mixed = [Finished(job_id, status, 0.01, 0.02) for job_id, status in zip(ids, statuses, strict=False)]
    assert (await backend.record(owner, mixed, [])).applied == 6
    assert (await backend.record(owner, [Finished(i, "successful") for i in ids[6:]], [])).applied == 2
    states = await backend.job_states(ids)
    assert [states[i].status for i in ids] == [*statuses, "successful", "successful"]


async def test_a_late_outcome_of_a_worker_that_no_longer_owns_the_job_is_dropped(backend: Backend) -> None:
    [job_id] = await enqueue_ids(backend, [new()])
    presumed_dead, rescuer = await worker(backend, 1), await worker(backend, 2)
    await backend.claim(presumed_dead, 1, plain())
    await backend.rescue_worker(presumed_dead, "no heartbeat")
    assert [job.id for job in (await backend.claim(rescuer, 1, plain())).jobs] == [job_id]

    assert (await backend.record(presumed_dead, [Finished(job_id, "exception")], [])).applied == 0
    assert (await backend.job_states([job_id]))[job_id].status == "picked"
    assert (await backend.record(rescuer, [Finished(job_id, "successful")], [])).applied == 1
    assert (await backend.job_states([job_id]))[job_id].status == "successful"


@pytest.mark.parametrize("hand_over", [None, HandOver({"capped": 1}, {"capped": 1})], ids=["plain", "handing over"])
async def test_finishing_a_concurrency_limited_job_announces_a_free_slot_no_job_took(
    backend: Backend, hand_over: HandOver | None
) -> None:
    [job_id] = await enqueue_ids(backend, [new("capped")])
    owner = await worker(backend, entrypoints=("capped",))
    await backend.claim(owner, 1, [EntrypointLimit("capped", concurrency=1)])
    events = Events()
    subscription = await backend.subscribe(events)
    try:
        # Nothing queued: a slot handed over finds no job, and is free.
        written = await backend.record(owner, [Finished(job_id, "successful")], ["capped"], hand_over=hand_over)
        assert written == Recorded(1, [])
        assert (await events.wait_for("slot")).entrypoints == ("capped",)
    finally:
        await subscription.close()


def capped(wanted: int, limit: int) -> HandOver:
    return HandOver({"capped": wanted}, {"capped": limit})


async def test_a_hand_over_claims_the_next_jobs_for_the_same_worker_in_the_slots_freed(backend: Backend) -> None:
    first, second, third, fourth = await enqueue_ids(backend, [new("capped", priority=p) for p in (0, 0, 5, 0)])
    owner = await worker(backend, entrypoints=("capped",))
    claimed = (await backend.claim(owner, 2, [EntrypointLimit("capped", concurrency=2)])).jobs
    assert [job.id for job in claimed] == [third, first]
    events = Events()
    subscription = await backend.subscribe(events)
    try:
        written = await backend.record(
            owner, [Finished(third, "successful"), Unfinished(first, "retry", 60.0)], ["capped"], hand_over=capped(2, 2)
        )
        # Its next jobs in the claim's order, counted as a claim counts them.
        assert written.applied == 2
        assert [(job.id, job.attempts) for job in written.successors] == [(second, 1), (fourth, 1)]
        states = await backend.job_states([second, fourth])
        assert {states[i].status for i in (second, fourth)} == {"picked"}
        # The slots went from job to job: none was free, so no notice said one was. The notice of a later enqueue
        # arrives after anything the write sent.
        await enqueue_ids(backend, [new("other")])

        async def later_enqueue() -> bool:
            return any(event.entrypoints == ("other",) for event in events)

        await wait_until(later_enqueue, timeout=5, what="the notice of the later enqueue")
        assert "slot" not in [event.kind for event in events]
        # The successors are the worker's as the claim's jobs are: its outcome applies, and frees a slot.
        assert (await backend.record(owner, [Finished(second, "successful")], ["capped"])).applied == 1
        assert (await events.wait_for("slot")).entrypoints == ("capped",)
    finally:
        await subscription.close()


async def test_a_hand_over_takes_no_more_than_the_jobs_that_ended_nor_than_the_limit_allows(backend: Backend) -> None:
    running = await enqueue_ids(backend, [new("capped") for _ in range(3)])
    waiting = await enqueue_ids(backend, [new("capped") for _ in range(3)])
    owner = await worker(backend, entrypoints=("capped",))
    await backend.claim(owner, 3, [EntrypointLimit("capped", concurrency=3)])
    # One job ended: one successor, whatever was asked.
    written = await backend.record(owner, [Finished(running[0], "successful")], ["capped"], hand_over=capped(3, 3))
    assert [job.id for job in written.successors] == [waiting[0]]
    # The limit was lowered to 2 since (a new config): 3 run, so the slot a job frees is not passed on.
    written = await backend.record(owner, [Finished(running[1], "successful")], ["capped"], hand_over=capped(1, 2))
    assert written.successors == []
    states = await backend.job_states(waiting)
    assert [states[i].status for i in waiting] == ["picked", "queued", "queued"]


async def test_a_hand_over_claims_nothing_of_a_paused_entrypoint_nor_for_outcomes_not_applied(
    backend: Backend,
) -> None:
    first, second, third = await enqueue_ids(backend, [new("capped") for _ in range(3)])
    owner, other = await worker(backend, 1, ("capped",)), await worker(backend, 2, ("capped",))
    await backend.claim(owner, 2, [EntrypointLimit("capped", concurrency=2)])
    # Another worker's outcome of this worker's job frees no slot of its own.
    written = await backend.record(other, [Finished(first, "successful")], ["capped"], hand_over=capped(1, 2))
    assert written == Recorded(0, [])
    await backend.pause(["capped"])
    written = await backend.record(owner, [Finished(first, "successful")], ["capped"], hand_over=capped(1, 2))
    assert written == Recorded(1, [])
    await backend.resume(["capped"])
    written = await backend.record(owner, [Finished(second, "successful")], ["capped"], hand_over=capped(1, 2))
    assert [job.id for job in written.successors] == [third]


# --- release_stray --------------------------------------------------------------------------------------------


async def test_release_stray_puts_back_the_jobs_a_worker_holds_but_does_not_run(backend: Backend) -> None:
    running, lost = await enqueue_ids(backend, [new(), new()])
    owner = await worker(backend)
    await backend.claim(owner, 2, plain())
    assert await backend.release_stray(owner, [running]) == [lost]
    states = await backend.job_states([running, lost])
    assert (states[running].status, states[lost].status, states[lost].attempts) == ("picked", "queued", 0)


# --- rescue_stale and rescue_worker (more in tests/test_quarantine.py) ----------------------------------------


async def test_the_rescues_take_only_the_jobs_of_dead_or_silent_workers(
    backend: Backend, time_passes: TimePasses
) -> None:
    alive, silent, dead = await worker(backend, 1), await worker(backend, 2), await worker(backend, 3)
    ids = await enqueue_ids(backend, [new(), new(), new()])
    for owner in (alive, silent, dead):
        await backend.claim(owner, 1, plain())
    assert await backend.rescue_worker(dead, "killed by signal 9") == [ids[2]]
    await time_passes(0.4)
    await backend.heartbeat(alive, info(1))
    assert await backend.rescue_stale(worker_timeout=0.3) == [ids[1]]
    states = await backend.job_states(ids)
    assert [states[i].status for i in ids] == ["picked", "queued", "queued"]


# --- sync_schedules, schedule_states, fire_schedule (more in tests/test_schedules.py) --------------------------


async def test_schedules_are_stored_listed_and_fired_once_per_tick(backend: Backend) -> None:
    now = datetime.now(UTC)
    spec = ScheduleSpec("report", "0 3 * * *", "reports", payload=b"{}", priority=2)
    await backend.sync_schedules(definitions([spec], now))
    [state] = await backend.schedule_states()
    assert (state.name, state.cron, state.entrypoint, state.priority, state.enabled) == (
        "report",
        "0 3 * * *",
        "reports",
        2,
        True,
    )
    assert state.last_run is None
    due, following = state.next_run, state.next_run + timedelta(days=1)
    ids = await backend.fire_schedule("report", due, following, [NewJob("reports", b"{}", 2)])
    assert ids is not None
    assert len(ids) == 1
    assert await backend.fire_schedule("report", due, following, [NewJob("reports")]) is None  # already fired
    [state] = await backend.schedule_states()
    assert (state.next_run, state.last_run, state.last_job_id, state.last_status) == (
        following,
        due,
        ids[0],
        "queued",
    )


# --- current_time (the scheduler fires by it: tests/test_schedules.py) ----------------------------------------


async def test_current_time_is_the_storages_aware_clock(backend: Backend) -> None:
    before = datetime.now(UTC)
    now = await backend.current_time()
    assert now.tzinfo is not None
    # Both clocks are this machine's here: they agree to well within a second.
    assert abs((now - before).total_seconds()) < 1


# --- close ----------------------------------------------------------------------------------------------------


async def test_close_releases_what_the_backend_holds(backend: Backend) -> None:
    events = Events()
    subscription = await backend.subscribe(events)
    if isinstance(backend, MemoryBackend):
        await backend.close()  # its subscriptions end; the data stays, for the test to inspect
        await backend.enqueue([new()], "raise")
        assert events == []
    else:
        await subscription.close()
        await backend.close()  # the pool it opened is closed (the fixture's second close is harmless)
        with pytest.raises(BackendUnavailable):
            await backend.enqueue([new()], "raise")
