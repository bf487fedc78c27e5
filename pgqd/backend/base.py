"""The storage port: every operation the client and the worker engine need, one method each.

Both adapters (``postgres`` and ``memory``) implement it with the same semantics, and one behavioural test
suite runs against both. Transient failures (a lost connection, a database restart) surface as
``pgqd.errors.BackendUnavailable`` so that callers can retry without knowing the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from pgqd.models import (
    CancelResult,
    ClaimResult,
    EntrypointLimit,
    Event,
    FinalStatus,
    HandOver,
    HeartbeatReply,
    JobLinks,
    JobState,
    NewJob,
    NewStep,
    OnConflict,
    Outcome,
    PauseState,
    Recorded,
    ScheduleDefinition,
    ScheduleState,
    StepsEnqueued,
    WorkerInfo,
    WorkflowView,
)

EventCallback = Callable[[Event], None]


class Subscription(Protocol):
    """A live feed of events on the queue's channel; the callback runs on the event loop."""

    async def close(self) -> None: ...


class ProducerBackend(Protocol):
    """What ``pgqd.Client`` needs: the producer and operator operations. Producers on drivers other than
    asyncpg implement only this (``pgqd.producers.backend``)."""

    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[int | None]:
        """Stores the jobs in one atomic step and returns their ids in input order (None where skipped)."""
        ...

    async def cancel(self, ids: Sequence[int], status: FinalStatus = "canceled") -> CancelResult:
        """Waiting and held jobs go to the log with ``status``; running ones are asked to stop."""
        ...

    async def requeue(self, ids: Sequence[int]) -> list[int]:
        """Held (failed) jobs become queued again with a fresh attempt budget; returns the ids requeued."""
        ...

    async def job_states(self, ids: Sequence[int]) -> dict[int, JobState]: ...

    async def watch_finished(self, job_id: int) -> bool:
        """Asks for a ``finished`` event when this job ends; False if it is not live (finished or unknown)."""
        ...

    async def subscribe(self, callback: EventCallback) -> Subscription: ...

    async def pause(self, entrypoints: Sequence[str] | None) -> None:
        """Stops every worker from claiming jobs of these entrypoints (None: of every entrypoint, those not seen
        yet included) until resumed. Running jobs go on; enqueueing still works."""
        ...

    async def resume(self, entrypoints: Sequence[str] | None) -> None:
        """Lets workers claim these entrypoints again (None: every entrypoint) and wakes idle ones at once."""
        ...

    async def pauses(self) -> PauseState: ...

    async def enqueue_steps(self, steps: Sequence[NewStep], workflow: str | None, make_workflow: bool) -> StepsEnqueued:
        """Stores jobs that may wait for others (``NewStep.after``) in one atomic step, with a workflow holding
        them when ``make_workflow``. A job whose parents have not all ended waits; parents that already ended
        settle it at once (docs/workflows.md)."""
        ...

    async def job_links(self, job_id: int) -> JobLinks: ...

    async def workflow(self, workflow_id: int) -> WorkflowView | None: ...

    async def cancel_workflow(self, workflow_id: int) -> CancelResult:
        """Cancels every step of the workflow that has not ended."""
        ...

    async def close(self) -> None: ...


class Backend(ProducerBackend, Protocol):
    # --- workers ------------------------------------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo) -> int: ...

    async def heartbeat(self, worker_id: int, info: WorkerInfo) -> HeartbeatReply:
        """Marks the worker alive (re-registering it if it was presumed dead); returns the ids of its running
        jobs that someone asked to cancel, and whether suspects of its entrypoints wait to run alone."""
        ...

    async def deregister_worker(self, worker_id: int) -> None: ...

    async def claim(
        self, worker_id: int, batch: int, limits: Sequence[EntrypointLimit], *, isolated: bool = False
    ) -> ClaimResult:
        """Claims up to ``batch`` eligible jobs of these entrypoints, in priority then FIFO order, within the
        fleet-wide limits. With ``isolated``, claims instead one suspect to run alone (the caller runs nothing
        else until it ends); other workers may run other suspects alone at the same time."""
        ...

    async def record(
        self,
        worker_id: int,
        outcomes: Sequence[Outcome],
        slot_entrypoints: Sequence[str],
        keep_payload: Sequence[str] = (),
        hand_over: HandOver | None = None,
    ) -> Recorded:
        """Applies outcomes of jobs this worker still owns, in one step; says how many applied.
        Finishing a job of an entrypoint in ``slot_entrypoints`` announces a free concurrency slot, unless the
        slot is handed over: with ``hand_over``, the same step claims for this worker the next jobs of those
        entrypoints, in the slots their ended jobs free, within their limits; they come back as ``successors``.
        A job of an entrypoint in ``keep_payload`` keeps its payload in the log."""
        ...

    async def release_stray(self, worker_id: int, keep: Sequence[int]) -> list[int]:
        """Requeues jobs marked as picked by this worker that it is not running (a claim whose reply was lost);
        a suspect claimed to run alone goes back to the suspects."""
        ...

    async def rescue_stale(self, worker_timeout: float) -> list[int]:
        """Takes back the jobs of workers silent for longer than ``worker_timeout`` seconds, as
        ``rescue_worker`` does; returns their ids."""
        ...

    async def rescue_worker(self, worker_id: int, cause: str = "worker died") -> list[int]:
        """Forgets a worker known to be dead and takes back the jobs it held; returns their ids.

        Each job counts the death and gets its lost run back. After its first death a job is queued again at
        once; after its second it is a suspect, to run alone. A job the worker ran alone (claimed isolated, no
        other job held) is charged with the death, and once it died alone its ``max_worker_deaths`` times it is
        given up with a ``pgqd.WorkerLost`` error naming ``cause`` (logged as exception, or held)."""
        ...

    async def parent_results(self, job_id: int) -> dict[int | str, Any]:
        """The results of the job's parents that succeeded with one, by parent id and by step name."""
        ...

    # --- schedules ----------------------------------------------------------------------------------------
    async def sync_schedules(self, schedules: Sequence[ScheduleDefinition]) -> None:
        """Makes the stored schedules match the config: adds, changes, disables and removes."""
        ...

    async def schedule_states(self) -> list[ScheduleState]: ...

    async def current_time(self) -> datetime:
        """The storage's current time (aware, UTC). Schedules fire by it, so that a host whose own clock is off
        neither fires ticks early nor skips any: every daemon of a fleet reads the same clock."""
        ...

    async def fire_schedule(
        self, name: str, due: datetime, next_run: datetime, jobs: Sequence[NewJob]
    ) -> list[int] | None:
        """If the schedule's next run is still ``due``, moves it to ``next_run`` and enqueues ``jobs``, at once;
        returns their ids, or None when another scheduler fired this tick first."""
        ...
