"""The blocking producer API, for code without an event loop: Django views, Flask, scripts."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pgqd.backend import operations, workflow_operations
from pgqd.backend.operations import Operation, run_sync
from pgqd.client import JobSpec, id_list, in_input_order, pause_targets, poll_pauses, prepare_batch, settled
from pgqd.dependencies import dependent_steps
from pgqd.errors import JobNotFound
from pgqd.identifiers import Names
from pgqd.models import CancelResult, JobLinks, JobState, OnConflict, ParentFailurePolicy, PauseState, WorkflowView
from pgqd.producers.targets import sync_executor
from pgqd.sql.statements import statements_for

if TYPE_CHECKING:
    from pgqd.workflow import Workflow, WorkflowRun

T = TypeVar("T")


class SyncClient:
    """Enqueues and manages jobs, blocking; the methods mean what ``pgqd.Client``'s do.

    ``target`` is a psycopg 3 Connection or ConnectionPool, a psycopg2 connection, a SQLAlchemy Connection,
    Session (or scoped_session) or Engine, or a DSN string. On a connection or session an enqueue joins the
    transaction open there: it is visible, and wakes the workers, when the caller commits, and is gone if the
    caller rolls back (on a connection in autocommit mode it commits by itself). A pool or engine lends a
    connection for one call and commits it. With a DSN the client opens a connection of its own in autocommit
    mode; ``close()`` it, or use the client as a context manager.
    """

    def __init__(
        self,
        target: Any,
        *,
        schema: str = "public",
        prefix: str = "pgqd_",
        wait_poll_interval: float = 1.0,
    ) -> None:
        self.sql = statements_for(Names(schema, prefix))
        self._executor = sync_executor(target)
        self._wait_poll_interval = wait_poll_interval

    def _run(self, operation: Operation[T]) -> T:
        return run_sync(operation, self._executor.fetch)

    def enqueue(
        self,
        entrypoint: str,
        payload: Any = None,
        *,
        priority: int = 0,
        execute_after: timedelta | datetime | None = None,
        dedupe_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        on_conflict: OnConflict = "raise",
        after: Iterable[int] | None = None,
        on_parent_failure: ParentFailurePolicy | None = None,
    ) -> int | None:
        """Stores one job and returns its id (None when ``on_conflict="skip"`` skipped it); see Client.enqueue."""
        spec = JobSpec(entrypoint, payload, priority, execute_after, dedupe_key, headers, after, on_parent_failure)
        return self.enqueue_many([spec], on_conflict=on_conflict)[0]

    def enqueue_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, on_conflict: OnConflict = "raise"
    ) -> list[int | None]:
        """Stores many jobs in one statement, all or nothing; ids come back in input order."""
        specs = jobs if isinstance(jobs, list) else list(jobs)
        sent, position = prepare_batch(specs, on_conflict)
        steps = dependent_steps(specs, sent, on_conflict)
        if steps is not None:
            return list(self._run(workflow_operations.enqueue_steps(self.sql, steps, None, False)).ids)
        return in_input_order(self._run(operations.enqueue(self.sql, sent, on_conflict)), position)

    def enqueue_workflow(self, workflow: Workflow) -> WorkflowRun:
        """Stores every step of a workflow in one statement; see Client.enqueue_workflow."""
        operation = workflow_operations.enqueue_steps(self.sql, workflow.new_steps(), workflow.name, True)
        return workflow.run_of(self._run(operation))

    def workflow(self, workflow_id: int) -> WorkflowView | None:
        return self._run(workflow_operations.workflow(self.sql, workflow_id))

    def links(self, job_id: int) -> JobLinks:
        return self._run(workflow_operations.job_links(self.sql, job_id))

    def cancel_workflow(self, workflow_id: int) -> CancelResult:
        """Cancels every step of the workflow that has not ended."""
        return self._run(workflow_operations.cancel_workflow(self.sql, workflow_id))

    def cancel(self, ids: int | Iterable[int]) -> CancelResult:
        """Waiting and held jobs are logged as canceled at once; running ones are told to stop."""
        return self._run(operations.cancel(self.sql, id_list(ids)))

    def delete(self, ids: int | Iterable[int]) -> CancelResult:
        """Like ``cancel``, but the log records the jobs as deleted."""
        return self._run(operations.cancel(self.sql, id_list(ids), "deleted"))

    def requeue(self, ids: int | Iterable[int]) -> list[int]:
        """Puts held (failed) jobs back in the queue with a fresh attempt budget; returns the ids requeued."""
        return self._run(operations.requeue(self.sql, id_list(ids)))

    def status(self, ids: int | Iterable[int]) -> dict[int, JobState]:
        """The state of each job found, live or finished; unknown ids are absent from the result."""
        return self._run(operations.job_states(self.sql, id_list(ids)))

    def pause(self, *entrypoints: str, all: bool = False) -> PauseState:
        """Stops every worker, on every host, from claiming these entrypoints (``all=True``: every one); see
        Client.pause."""
        self._run(operations.pause(self.sql, pause_targets(entrypoints, all, "pause")))
        return self.paused()

    def resume(self, *entrypoints: str, all: bool = False) -> PauseState:
        """Undoes ``pause`` and wakes idle workers at once; see Client.resume."""
        self._run(operations.resume(self.sql, pause_targets(entrypoints, all, "resume")))
        return self.paused()

    def paused(self) -> PauseState:
        """What is paused now; ``.is_paused(name)`` answers for one entrypoint."""
        return self._run(operations.pauses(self.sql))

    def wait(self, job_id: int, timeout: float | None = None) -> JobState:
        """Polls until the job reaches a final status (or is held as failed) and returns that state.

        Raises TimeoutError after ``timeout`` seconds, JobNotFound for an unknown id. The job's progress is
        visible only outside a transaction that enqueued it, so wait after committing.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for pause in poll_pauses(self._wait_poll_interval):
            state = self.status(job_id).get(job_id)
            if state is None:
                raise JobNotFound(job_id)
            if settled(state):
                return state
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout}s (now {state.status})")
                pause = min(pause, remaining)
            time.sleep(pause)
        raise AssertionError("unreachable: poll_pauses never ends")

    def close(self) -> None:
        """Closes the connection the client opened for a DSN; a caller's connection, pool or session is left
        alone."""
        self._executor.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
