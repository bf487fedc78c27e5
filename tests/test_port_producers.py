"""The storage port's conformance suite, producer and operator side: one section per ``Backend`` method, each
test run on PostgreSQL and on the in-memory backend (the ``backend`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqd import DedupeConflict
from pgqd.backend.base import Backend
from pgqd.models import ErrorInfo, Finished, Unfinished
from tests.support.port import Events, enqueue_ids, info, new, plain, worker

# --- enqueue --------------------------------------------------------------------------------------------------


async def test_enqueue_returns_ids_in_input_order_and_stores_what_it_was_given(backend: Backend) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = await enqueue_ids(
        backend,
        [
            new("a", payload=b"\x00raw", priority=3),
            new("b", payload=None, headers='{"k": "v"}'),
            new("a", delay=3600.0),
            new("a", execute_after=later),
        ],
    )
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    states = await backend.job_states(ids)
    assert [states[i].status for i in ids] == ["queued", "queued", "deferred", "deferred"]
    assert [states[i].entrypoint for i in ids] == ["a", "b", "a", "a"]
    assert states[ids[0]].priority == 3
    assert {states[i].attempts for i in ids} == {0}
    assert await backend.enqueue([], "raise") == []


async def test_enqueue_raise_keeps_nothing_of_a_batch_with_a_conflicting_dedupe_key(backend: Backend) -> None:
    held = await enqueue_ids(backend, [new(dedupe_key="k1"), new(dedupe_key="k2")])
    with pytest.raises(DedupeConflict) as caught:
        await backend.enqueue([new(dedupe_key="fresh"), new(dedupe_key="k1"), new(dedupe_key="k2")], "raise")
    assert sorted(caught.value.keys) == ["k1", "k2"]
    assert sorted(await backend.job_states(range(held[0], held[0] + 6))) == held


async def test_enqueue_skip_returns_none_for_a_conflicting_key_and_keeps_the_rest(backend: Backend) -> None:
    [held] = await enqueue_ids(backend, [new(dedupe_key="k1", priority=1)])
    ids = await backend.enqueue([new(dedupe_key="k1", priority=9), new(dedupe_key="k2")], "skip")
    assert ids[0] is None
    assert isinstance(ids[1], int)
    assert (await backend.job_states([held]))[held].priority == 1


async def test_enqueue_raise_priority_returns_the_existing_job_and_only_ever_raises_its_priority(
    backend: Backend,
) -> None:
    [held] = await enqueue_ids(backend, [new(dedupe_key="k1", priority=5)])
    assert await backend.enqueue([new(dedupe_key="k1", priority=9)], "raise_priority") == [held]
    assert (await backend.job_states([held]))[held].priority == 9
    assert await backend.enqueue([new(dedupe_key="k1", priority=1)], "raise_priority") == [held]
    assert (await backend.job_states([held]))[held].priority == 9


async def test_a_dedupe_key_is_free_again_once_its_job_finished(backend: Backend) -> None:
    [first] = await enqueue_ids(backend, [new(dedupe_key="once")])
    await backend.cancel([first])
    [second] = await enqueue_ids(backend, [new(dedupe_key="once")])
    assert second != first


# --- cancel ---------------------------------------------------------------------------------------------------


async def test_cancel_logs_waiting_and_held_jobs_and_asks_running_ones_to_stop(backend: Backend) -> None:
    waiting, deferred, running = await enqueue_ids(backend, [new(), new(delay=3600.0), new("run")])
    owner = await worker(backend, entrypoints=("run",))
    await backend.claim(owner, 1, plain("run"))
    events = Events()
    subscription = await backend.subscribe(events)
    try:
        result = await backend.cancel([waiting, deferred, running, 999_999])
        assert sorted(result.canceled) == sorted([waiting, deferred])
        assert result.signalled == [running]
        # The running job's worker learns it from an event and from its heartbeat.
        assert (await events.wait_for("cancel")).ids == (running,)
    finally:
        await subscription.close()
    assert (await backend.heartbeat(owner, info(entrypoints=("run",)))).cancel == [running]
    states = await backend.job_states([waiting, deferred, running])
    assert [states[i].status for i in (waiting, deferred, running)] == ["canceled", "canceled", "picked"]
    # It is logged as canceled when the worker reports it so.
    assert (await backend.record(owner, [Finished(running, "canceled")], [])).applied == 1
    assert (await backend.job_states([running]))[running].status == "canceled"


async def test_cancel_with_status_deleted_logs_the_jobs_as_deleted(backend: Backend) -> None:
    ids = await enqueue_ids(backend, [new(), new(delay=3600.0)])
    result = await backend.cancel([*ids, 424242], status="deleted")
    assert sorted(result.canceled) == ids
    states = await backend.job_states(ids)
    assert {state.status for state in states.values()} == {"deleted"}
    assert all(state.finished for state in states.values())


# --- requeue --------------------------------------------------------------------------------------------------


async def held_job(backend: Backend, **fields: object) -> tuple[int, int]:
    [job_id] = await enqueue_ids(backend, [new(**fields)])
    owner = await worker(backend)
    await backend.claim(owner, 1, plain())
    await backend.record(owner, [Unfinished(job_id, "hold", error=ErrorInfo("ValueError", "bad"))], [])
    return job_id, owner


async def test_requeue_gives_a_held_job_a_fresh_budget_and_ignores_other_jobs(backend: Backend) -> None:
    held, _ = await held_job(backend)
    [waiting] = await enqueue_ids(backend, [new()])
    assert (await backend.job_states([held]))[held].status == "failed"
    assert await backend.requeue([held, waiting, 999_999]) == [held]
    state = (await backend.job_states([held]))[held]
    assert state.status == "queued"
    assert state.attempts == 0


async def test_requeue_refuses_a_held_job_whose_dedupe_key_was_taken_meanwhile(backend: Backend) -> None:
    held, _ = await held_job(backend, dedupe_key="key")
    await enqueue_ids(backend, [new(dedupe_key="key")])  # a held job does not hold its key
    with pytest.raises(DedupeConflict):
        await backend.requeue([held])
    assert (await backend.job_states([held]))[held].status == "failed"


# --- job_states -----------------------------------------------------------------------------------------------


async def test_job_states_of_live_finished_and_unknown_jobs(backend: Backend) -> None:
    live, done = await enqueue_ids(backend, [new(), new()])
    owner = await worker(backend)
    await backend.claim(owner, 2, plain())
    await backend.record(owner, [Finished(done, "successful", result_json='{"n": 1}')], [])
    states = await backend.job_states([live, done, 999_999])
    assert set(states) == {live, done}
    assert (states[live].status, states[live].finished, states[live].attempts) == ("picked", False, 1)
    assert (states[done].status, states[done].finished, states[done].result) == ("successful", True, {"n": 1})
    assert states[done].created_at.tzinfo is not None


# --- watch_finished -------------------------------------------------------------------------------------------


async def test_watch_finished_announces_the_end_of_a_live_job_only(backend: Backend) -> None:
    [job_id] = await enqueue_ids(backend, [new()])
    assert await backend.watch_finished(job_id)
    assert not await backend.watch_finished(999_999)
    events = Events()
    subscription = await backend.subscribe(events)
    try:
        owner = await worker(backend)
        await backend.claim(owner, 1, plain())
        await backend.record(owner, [Finished(job_id, "successful")], [])
        assert job_id in (await events.wait_for("finished")).ids
    finally:
        await subscription.close()
    assert not await backend.watch_finished(job_id)


# --- subscribe ------------------------------------------------------------------------------------------------


async def test_subscribers_hear_of_new_jobs_and_stop_hearing_once_closed(backend: Backend) -> None:
    events = Events()
    subscription = await backend.subscribe(events)
    await enqueue_ids(backend, [new("mail"), new("sms", delay=60.0)])
    enqueued = await events.wait_for("enqueued")
    assert set(enqueued.entrypoints) == {"mail", "sms"}
    assert enqueued.due_in is None  # one of them is due now

    events.clear()
    await enqueue_ids(backend, [new("later", delay=30.0)])
    deferred = await events.wait_for("enqueued")
    assert deferred.due_in is not None
    assert 0 < deferred.due_in <= 30

    await subscription.close()
    events.clear()
    await enqueue_ids(backend, [new("mail")])
    other = Events()
    probe = await backend.subscribe(other)  # a second subscriber hears it: the first no longer does
    try:
        await enqueue_ids(backend, [new("mail")])
        await other.wait_for("enqueued")
    finally:
        await probe.close()
    assert events == []
