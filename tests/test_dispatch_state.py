"""The dispatch loop's state machine, table by table, without a database: which step each state leads to, and
what each event does to the state."""

from __future__ import annotations

from typing import Any

import pytest

from pgqd.models import ClaimedJob
from pgqd.worker.dispatch_state import CLAIMS_IN_FLIGHT, DispatchState, Step

FULL = 10


def job(job_id: int = 7) -> ClaimedJob:
    return ClaimedJob(job_id, "work", None, None, 0, 1, 0.0, 0.0, 0.0, False)


# (fields of the state, running, free, budget) -> the step
NEXT_STEP: list[tuple[dict[str, Any], int, int, int | None, Step]] = [
    ({}, 0, 32, None, "claim"),
    ({"stopping": True, "suspect_running": 7}, 0, 32, None, "stop"),
    ({"suspect_running": 7}, 0, 32, None, "wait"),
    ({"suspect_claimed": job()}, 3, 29, None, "wait"),  # its neighbours must end first
    ({"suspect_claimed": job(), "claiming": 1}, 0, 22, None, "wait"),  # and claims under way come back
    ({"suspect_claimed": job()}, 0, 32, None, "run_alone"),
    ({"suspect_claimed": job(), "handing": 1}, 0, 31, None, "wait"),  # a write may still hand it a job
    ({"suspect_claimed": job(), "reconcile": True}, 0, 32, None, "reconcile"),  # jobs a lost reply left go first
    ({"flush_first": True}, 0, 32, None, "flush"),
    ({"heartbeat_ok": False}, 0, 32, None, "wait"),
    ({"suspects": True}, 5, 27, None, "claim_suspect"),
    ({"suspects": True, "claiming": 1}, 5, 17, None, "wait"),
    ({"may_have_work": False}, 0, 32, None, "idle"),
    ({}, 32, 0, None, "idle"),  # no free slot
    ({"claiming": CLAIMS_IN_FLIGHT}, 0, 12, None, "idle"),
    ({"may_have_work": False, "claiming": 1, "queue_deep": True}, 0, 22, None, "claim"),  # a deep queue
    ({"may_have_work": False, "claiming": 1, "queue_deep": False}, 0, 22, None, "idle"),
    ({"claiming": 1}, 0, 4, None, "idle"),  # a second claim goes only for half a batch or more...
    ({"claiming": 1}, 0, 5, None, "claim"),  # ...not a full one: long jobs may hold the other slots for minutes
    ({"reconcile": True}, 0, 32, None, "reconcile"),
    ({"reconcile": True, "claiming": 1}, 0, 22, None, "wait"),
    ({}, 0, 32, 0, "retire"),
    ({"reconcile": True}, 0, 32, 0, "reconcile"),  # settled before it retires
    ({}, 0, 32, 3, "claim"),
    # Jobs just started have not run: a claim for fewer than a full batch waits a turn of the loop for them...
    ({"starts_pending": True}, 26, 6, None, "let_start"),
    ({}, 26, 6, None, "claim"),  # ...after which what is free is what long jobs leave
    ({"starts_pending": True}, 16, 16, None, "claim"),  # a full batch goes at once
    ({"starts_pending": True, "claiming": 1}, 16, 6, None, "let_start"),  # a second claim too
]


@pytest.mark.parametrize(("fields", "running", "free", "budget", "step"), NEXT_STEP)
def test_next_step(fields: dict[str, Any], running: int, free: int, budget: int | None, step: Step) -> None:
    assert DispatchState(**fields).next_step(running, free, FULL, budget) == step


# (fields of the state, budget) -> whether a freed slot may be kept for its entrypoint's next job
MAY_HAND_OVER: list[tuple[dict[str, Any], int | None, bool]] = [
    ({}, None, True),
    ({}, 1, True),
    ({"queue_deep": False}, None, False),  # time to spare: the slot is announced to the fleet
    ({}, 0, False),  # the job budget is spent
    ({"stopping": True}, None, False),
    ({"heartbeat_ok": False}, None, False),
    ({"reconcile": True}, None, False),  # it cannot vouch for what it holds
    ({"suspects": True}, None, False),  # a suspect waits to run alone: let the jobs under way end
    ({"suspect_claimed": job()}, None, False),
    ({"suspect_running": 7}, None, False),
    ({"flush_first": True}, None, False),
]


@pytest.mark.parametrize(("fields", "budget", "allowed"), MAY_HAND_OVER)
def test_may_hand_over(fields: dict[str, Any], budget: int | None, allowed: bool) -> None:
    assert DispatchState(**({"queue_deep": True} | fields)).may_hand_over(budget) is allowed


def test_jobs_started_are_pending_until_the_loop_turns() -> None:
    state = DispatchState()
    state.jobs_started()
    assert state.next_step(10, 6, FULL) == "let_start"
    state.loop_turned()
    assert state.next_step(10, 6, FULL) == "claim"


def test_a_kept_slot_is_booked_until_the_write_settles_it() -> None:
    state = DispatchState()
    state.claim_sent(4)
    state.hand_over_kept()
    state.hand_over_kept()
    assert (state.reserved, state.handing) == (6, 2)
    state.hand_over_settled(2)
    assert (state.reserved, state.handing) == (4, 0)


def test_a_claim_books_its_slots_until_it_ends_and_clears_the_hint_before_it_is_sent() -> None:
    state = DispatchState()
    first, second = state.claim_sent(10), state.claim_sent(4)
    assert (first, second, state.reserved, state.claiming, state.may_have_work) == (1, 2, 14, 2, False)
    state.claim_ended(10)
    assert (state.reserved, state.claiming) == (4, 1)


# (claims settled in this order: number, found, wanted) -> queue_deep, last_found, may_have_work
SETTLE: list[tuple[list[tuple[int, int, int]], bool, int, bool]] = [
    ([(1, 10, 10)], True, 10, True),
    ([(1, 3, 10)], False, 3, False),
    ([(2, 0, 10), (1, 10, 10)], False, 0, True),  # the older reply does not overwrite the newer
    ([(1, 0, 10), (2, 10, 10)], True, 10, True),
]


@pytest.mark.parametrize(("replies", "deep", "found", "more"), SETTLE)
def test_settling_claims_keeps_what_the_newest_said(
    replies: list[tuple[int, int, int]], deep: bool, found: int, more: bool
) -> None:
    state = DispatchState(may_have_work=False)
    for number, got, wanted in replies:
        state.settle(number, got, wanted, throttled=False)
    assert (state.queue_deep, state.last_found, state.may_have_work) == (deep, found, more)


def test_a_suspect_goes_from_claimed_to_running_alone_to_a_flush_before_anything_else() -> None:
    state = DispatchState()
    state.settle(1, 0, 10, throttled=False, suspects=True)
    assert state.next_step(0, 32, FULL) == "claim_suspect"
    state.suspect_claim_sent()
    state.suspect_taken(job(7), more=True)
    assert state.next_step(2, 30, FULL) == "wait"
    assert state.next_step(0, 32, FULL) == "run_alone"
    assert state.suspect_started() == job(7)
    assert state.next_step(1, 31, FULL) == "wait"
    state.job_ended(8)  # some other job: nothing changes
    assert state.suspect_running == 7
    state.job_ended(7)
    assert state.next_step(0, 32, FULL) == "flush"
    state.flushed_first()
    assert state.next_step(0, 32, FULL) == "claim_suspect"  # more were waiting


def test_a_suspect_runs_alone_only_once_jobs_a_lost_claim_reply_may_have_left_are_released() -> None:
    state = DispatchState()
    state.claim_sent(10)
    state.claim_failed()
    state.claim_ended(10)
    state.suspects_announced()
    assert state.next_step(0, 32, FULL) == "claim_suspect"
    state.suspect_claim_sent()
    state.suspect_taken(job(7), more=False)
    assert state.next_step(0, 32, FULL) == "reconcile"
    state.reconciled()
    assert state.next_step(0, 32, FULL) == "run_alone"


def test_a_suspect_dropped_before_it_starts_never_runs() -> None:
    state = DispatchState(suspect_claimed=job(7))
    assert state.suspect_dropped() == job(7)
    assert state.suspect_started() is None
    assert state.next_step(0, 32, FULL) == "claim"


def test_events_report_whether_they_are_news() -> None:
    state = DispatchState()
    assert state.heartbeat_stale()
    assert not state.heartbeat_stale()
    assert state.heartbeat_recorded()
    assert not state.heartbeat_recorded()
    assert state.suspects_announced()
    assert not state.suspects_announced()


def test_a_lost_database_asks_for_a_reconcile_once_claims_are_back() -> None:
    state = DispatchState()
    state.claim_sent(10)
    state.claim_failed()
    assert state.next_step(0, 22, FULL) == "wait"
    state.claim_ended(10)
    assert state.next_step(0, 32, FULL) == "reconcile"
    state.reconciled()
    assert state.next_step(0, 32, FULL) == "claim"


def test_wake_up_times_only_move_earlier_and_a_poll_clears_one_that_came() -> None:
    state = DispatchState(may_have_work=False)
    assert state.wake_at_or_before(10.0)
    assert not state.wake_at_or_before(12.0)
    assert state.wake_at_or_before(5.0)
    state.slept(now=4.0)
    assert (state.wake_at, state.may_have_work) == (5.0, True)
    state.slept(now=6.0)
    assert state.wake_at is None


def test_only_a_poll_or_a_due_job_reopens_every_limited_entrypoint() -> None:
    state = DispatchState()
    assert state.slept(now=1.0)  # a poll: nothing was due
    state.wake_at_or_before(2.0)  # a rate limit's next tokens
    assert not state.slept(now=2.0)  # its gate opens by itself; the limits full with this worker's jobs stay closed
    assert state.wake_at is None
    state.wake_at_or_before(3.0, due=True)
    assert state.slept(now=3.0)
    assert (state.wake_at, state.due_at) == (None, None)


def test_a_due_job_behind_a_gate_keeps_its_wake_up() -> None:
    state = DispatchState()
    state.wake_at_or_before(8.0, due=True)
    assert state.wake_at_or_before(5.0)
    assert not state.slept(now=5.0)
    assert state.wake_at == 8.0  # the next sleep still ends when the job is due
    assert state.slept(now=8.0)
    assert state.wake_at is None


def test_a_reconnection_releases_what_the_database_may_have_brought_back_and_looks_for_work() -> None:
    state = DispatchState(may_have_work=False)
    state.reconnected()
    assert state.next_step(0, 32, FULL) == "reconcile"


def test_nothing_claimable_waits_for_the_next_announcement_of_work() -> None:
    # A claim was about to go out, but the worker's own jobs fill every limit it would ask for.
    state = DispatchState()
    state.nothing_claimable()
    assert state.next_step(running=2, free=30, full=FULL) == "idle"
    # One of its jobs ended and its outcome freed the slot (or a notification, or a poll).
    state.work_announced()
    assert state.next_step(running=1, free=31, full=FULL) == "claim"
