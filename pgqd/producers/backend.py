"""The producer half of the storage port on any asynchronous driver adapter, for ``pgqd.Client``.

It delivers no events (there is no LISTEN connection of its own to receive them on), so ``Client.wait``
finds out that a job finished by polling.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgqd.backend import operations, workflow_operations
from pgqd.backend.base import EventCallback, ProducerBackend
from pgqd.backend.operations import run_async
from pgqd.identifiers import Names
from pgqd.models import (
    CancelResult,
    FinalStatus,
    JobLinks,
    JobState,
    NewJob,
    NewStep,
    OnConflict,
    PauseState,
    StepsEnqueued,
    WorkflowView,
)
from pgqd.producers.executors import AsyncExecutor
from pgqd.sql.statements import statements_for


class _NoEvents:
    async def close(self) -> None:
        return None


class DriverBackend:
    def __init__(self, executor: AsyncExecutor, names: Names) -> None:
        self.names = names
        self.sql = statements_for(names)
        self._executor = executor

    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[int | None]:
        return await run_async(operations.enqueue(self.sql, jobs, on_conflict), self._executor.fetch)

    async def cancel(self, ids: Sequence[int], status: FinalStatus = "canceled") -> CancelResult:
        return await run_async(operations.cancel(self.sql, ids, status), self._executor.fetch)

    async def requeue(self, ids: Sequence[int]) -> list[int]:
        return await run_async(operations.requeue(self.sql, ids), self._executor.fetch)

    async def job_states(self, ids: Sequence[int]) -> dict[int, JobState]:
        return await run_async(operations.job_states(self.sql, ids), self._executor.fetch)

    async def pause(self, entrypoints: Sequence[str] | None) -> None:
        await run_async(operations.pause(self.sql, entrypoints), self._executor.fetch)

    async def resume(self, entrypoints: Sequence[str] | None) -> None:
        await run_async(operations.resume(self.sql, entrypoints), self._executor.fetch)

    async def pauses(self) -> PauseState:
        return await run_async(operations.pauses(self.sql), self._executor.fetch)

    async def enqueue_steps(self, steps: Sequence[NewStep], workflow: str | None, make_workflow: bool) -> StepsEnqueued:
        operation = workflow_operations.enqueue_steps(self.sql, steps, workflow, make_workflow)
        return await run_async(operation, self._executor.fetch)

    async def job_links(self, job_id: int) -> JobLinks:
        return await run_async(workflow_operations.job_links(self.sql, job_id), self._executor.fetch)

    async def workflow(self, workflow_id: int) -> WorkflowView | None:
        return await run_async(workflow_operations.workflow(self.sql, workflow_id), self._executor.fetch)

    async def cancel_workflow(self, workflow_id: int) -> CancelResult:
        return await run_async(workflow_operations.cancel_workflow(self.sql, workflow_id), self._executor.fetch)

    async def watch_finished(self, job_id: int) -> bool:
        # Without events to deliver there is nothing to ask for: the caller polls.
        return True

    async def subscribe(self, callback: EventCallback) -> _NoEvents:
        return _NoEvents()

    async def close(self) -> None:
        await self._executor.close()


def _satisfies_the_port(driver: DriverBackend) -> ProducerBackend:
    """Never called: ``mypy --strict`` checks here that the driver adapter satisfies the producer half of the
    storage port, as pgqd/backend/conformance.py does for the other two."""
    return driver
