"""Workflows in the in-memory backend: the edges between jobs, and the settling of children when a parent ends,
with the semantics of migration 0012's ``enqueue_steps`` and ``settle_children``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgqd.backend.memory_rows import JobRow, LogRow, new_row
from pgqd.backend.workflow_operations import results_by_parent
from pgqd.errors import DedupeConflict, UnknownParents
from pgqd.models import (
    CancelResult,
    ErrorInfo,
    Event,
    FinalStatus,
    JobLinks,
    LinkedJob,
    LiveStatus,
    NewStep,
    StepsEnqueued,
    WorkflowStep,
    WorkflowView,
)

# (parent id, how it ended, its result) for each parent that ended.
Ended = tuple[int, str, Any]


@dataclass
class _Workflow:
    id: int
    name: str | None
    created_at: datetime
    jobs: list[int] = field(default_factory=list)


class MemoryWorkflows:
    """Mixed into MemoryBackend, whose rows and bookkeeping it uses (declared here, defined there)."""

    jobs: dict[int, JobRow]
    log: dict[int, LogRow]
    _dedupe: dict[str, int]
    _ids: Any

    def _reset_workflows(self) -> None:
        self._children: dict[int, list[int]] = {}
        self._parents: dict[int, list[int]] = {}
        self._edge_results: dict[tuple[int, int], Any] = {}
        self._workflows: dict[int, _Workflow] = {}
        self._steps: dict[int, tuple[int, str | None]] = {}
        self._workflow_ids = itertools.count(1)

    # Defined by MemoryBackend.
    def _now(self) -> datetime:
        raise NotImplementedError

    def _emit(self, event: Event) -> None:
        raise NotImplementedError

    def _set_status(self, job: JobRow, status: LiveStatus) -> None:
        raise NotImplementedError

    def _remove(self, job: JobRow) -> None:
        raise NotImplementedError

    def _log(self, job: JobRow, status: FinalStatus, **fields: Any) -> None:
        raise NotImplementedError

    async def cancel(self, ids: Sequence[int], status: FinalStatus = "canceled") -> CancelResult:
        raise NotImplementedError

    # --- enqueue ------------------------------------------------------------------------------------------
    async def enqueue_steps(self, steps: Sequence[NewStep], workflow: str | None, make_workflow: bool) -> StepsEnqueued:
        if not steps:
            return StepsEnqueued([], None)
        external = sorted({p for step in steps for p in step.after if p > 0})
        unknown = [p for p in external if p not in self.jobs and p not in self.log]
        if unknown:
            raise UnknownParents(unknown)
        keys = [s.job.dedupe_key for s in steps if s.job.dedupe_key is not None]
        taken = [k for k in keys if k in self._dedupe]
        if taken or len(set(keys)) != len(keys):
            raise DedupeConflict(taken or keys)
        now = self._now()
        ids = [next(self._ids) for _ in steps]
        workflow_id = None
        if make_workflow:
            workflow_id = next(self._workflow_ids)
            self._workflows[workflow_id] = _Workflow(workflow_id, workflow, now, list(ids))
        claimable: set[str] = set()
        for job_id, step in zip(ids, steps, strict=True):
            new = step.job
            parents = list(dict.fromkeys(p if p > 0 else ids[-p - 1] for p in step.after))
            job = new_row(job_id, new, now)
            job.waiting_on = len(parents)
            job.on_parent_failure = step.on_parent_failure
            self.jobs[job_id] = job
            if job.dedupe_key is not None:
                self._dedupe[job.dedupe_key] = job_id
            for parent in parents:
                self._children.setdefault(parent, []).append(job_id)
                if parent in self.jobs:
                    self.jobs[parent].has_dependents = True
            self._parents[job_id] = parents
            if make_workflow:
                assert workflow_id is not None
                self._steps[job_id] = (workflow_id, step.step)
            if parents:
                self._set_status(job, "waiting")
            else:
                self._set_status(job, "deferred" if job.execute_after > now else "queued")
                claimable.add(job.entrypoint)
        ended: list[Ended] = [(p, self.log[p].status, self.log[p].result) for p in external if p not in self.jobs]
        if ended:
            self._settle(ended, set(ids))
        if claimable:
            self._emit(Event("enqueued", tuple(sorted(claimable))))
        return StepsEnqueued(ids, workflow_id)

    # --- settling -----------------------------------------------------------------------------------------
    def _settle(self, ended: list[Ended], only: set[int] | None = None) -> None:
        """Settles the children of parents that ended, by their policies, transitively (as settle_children)."""
        released: set[str] = set()
        watched: list[int] = []
        now = self._now()
        while ended:
            tally: dict[int, list[Any]] = {}
            for parent, status, result in ended:
                for child in self._children.get(parent, ()):
                    if only is not None and child not in only:
                        continue
                    if status == "successful" and result is not None:
                        self._edge_results[(parent, child)] = result
                    counted = tally.setdefault(child, [0, None, None])
                    counted[0] += 1
                    if status != "successful" and (counted[1] is None or parent < counted[1]):
                        counted[1], counted[2] = parent, status
            following: list[Ended] = []
            for child in sorted(tally):
                job = self.jobs.get(child)
                if job is None or job.status != "waiting":
                    continue
                count, failed, how = tally[child]
                policy = job.on_parent_failure or "cancel"
                why = ErrorInfo("pgqd.ParentFailed", f"parent job {failed} ended {how}")
                if failed is not None and policy == "cancel":
                    self._remove(job)
                    self._log(job, "canceled", error=why)
                    if job.notify_finished:
                        watched.append(job.id)
                    if job.has_dependents:
                        following.append((job.id, "canceled", None))
                    continue
                job.waiting_on -= count
                if failed is not None and policy == "hold":
                    job.last_error = why
                    self._set_status(job, "failed")
                    if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key) == job.id:
                        del self._dedupe[job.dedupe_key]
                    if job.notify_finished:
                        watched.append(job.id)
                elif job.waiting_on <= 0:
                    self._set_status(job, "deferred" if job.execute_after > now else "queued")
                    released.add(job.entrypoint)
            ended, only = following, None
        if watched:
            self._emit(Event("finished", ids=tuple(watched)))
        if released:
            self._emit(Event("enqueued", tuple(sorted(released))))

    def _settle_ended(self, ended: list[Ended]) -> None:
        if ended:
            self._settle(sorted(ended))

    # --- reading ------------------------------------------------------------------------------------------
    async def parent_results(self, job_id: int) -> dict[int | str, Any]:
        rows = [
            (parent, self._step_of(parent), json.loads(json.dumps(self._edge_results[(parent, job_id)])))
            for parent in self._parents.get(job_id, ())
            if (parent, job_id) in self._edge_results
        ]
        return results_by_parent(rows)

    def _step_of(self, job_id: int) -> str | None:
        found = self._steps.get(job_id)
        return None if found is None else found[1]

    def _linked(self, job_id: int) -> LinkedJob:
        live, done = self.jobs.get(job_id), self.log.get(job_id)
        row = live or done
        return LinkedJob(job_id, self._step_of(job_id), row.entrypoint if row else None, row.status if row else None)

    async def job_links(self, job_id: int) -> JobLinks:
        found = self._steps.get(job_id)
        return JobLinks(
            None if found is None else found[0],
            [self._linked(p) for p in sorted(self._parents.get(job_id, ()))],
            [self._linked(c) for c in sorted(self._children.get(job_id, ()))],
        )

    async def workflow(self, workflow_id: int) -> WorkflowView | None:
        found = self._workflows.get(workflow_id)
        if found is None:
            return None
        steps = []
        for job_id in found.jobs:
            linked = self._linked(job_id)
            steps.append(
                WorkflowStep(job_id, linked.step, linked.entrypoint, linked.status, sorted(self._parents[job_id]))
            )
        return WorkflowView(found.id, found.name, found.created_at, steps)

    async def cancel_workflow(self, workflow_id: int) -> CancelResult:
        found = self._workflows.get(workflow_id)
        live = [] if found is None else [j for j in found.jobs if j in self.jobs]
        return await self.cancel(live)
