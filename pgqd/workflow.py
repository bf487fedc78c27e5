"""Building a workflow: jobs that wait for other jobs, enqueued in one call and one transaction.

    wf = Workflow("report")
    fetch = wf.add("fetch", {"day": "2026-12-06"})
    pages = wf.group(*(JobSpec("render", {"page": n}) for n in range(500)), after=fetch)
    wf.add("build_pdf", after=pages, name="pdf")
    run = await client.enqueue_workflow(wf)       # run.id, run["pdf"], run.ids

``chain`` runs jobs one after the other, ``group`` side by side, ``chord`` a group and then one callback that
reads every member's result (``ctx.parent_results``). Any step may wait for any earlier step or existing job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgqd.client import JobSpec, as_spec, build_job
from pgqd.dependencies import check_policy, parent_ids
from pgqd.errors import PgqdError
from pgqd.models import NewStep, ParentFailurePolicy, StepsEnqueued
from pgqd.tracing import trace_headers


@dataclass(frozen=True, slots=True)
class Step:
    """A step of a workflow being built: pass it (or a list of them) as ``after`` of later steps."""

    index: int
    name: str


Parents = Step | int | Iterable[Step | int] | None
JobLike = str | JobSpec | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """A stored workflow: its id, and each step's job id in the order the steps were added (``run["name"]`` by
    step name)."""

    id: int
    ids: list[int]
    by_name: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.by_name[name]

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)


class Workflow:
    """Steps and the edges between them. ``on_parent_failure`` is every step's default policy (``cancel``,
    ``run`` or ``hold``; see docs/workflows.md); a step may set its own."""

    def __init__(self, name: str | None = None, *, on_parent_failure: ParentFailurePolicy = "cancel") -> None:
        self.name = name
        self.on_parent_failure = check_policy(on_parent_failure)
        self._specs: list[JobSpec] = []
        self._names: list[str] = []
        self._after: list[tuple[int, ...]] = []
        self._policies: list[ParentFailurePolicy | None] = []

    def __len__(self) -> int:
        return len(self._specs)

    def add(
        self,
        job: JobLike,
        payload: Any = None,
        *,
        after: Parents = None,
        name: str | None = None,
        on_parent_failure: ParentFailurePolicy | None = None,
        priority: int = 0,
        execute_after: timedelta | datetime | None = None,
        dedupe_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Step:
        """Adds a step: an entrypoint name (with the other arguments), or a JobSpec. It waits for ``after``:
        steps of this workflow, ids of existing jobs, or a list of either."""
        if isinstance(job, str):
            spec = JobSpec(job, payload, priority, execute_after, dedupe_key, headers)
        else:
            spec = as_spec(job)
        index = len(self._specs)
        label = name or f"{spec.entrypoint}-{index + 1}"
        if label in self._names:
            raise PgqdError(f"workflow step name {label!r} is used twice")
        refs = [*self._refs(after), *parent_ids(spec.after)]
        self._specs.append(spec)
        self._names.append(label)
        self._after.append(tuple(dict.fromkeys(refs)))
        self._policies.append(check_policy(on_parent_failure or spec.on_parent_failure))
        return Step(index, label)

    def chain(self, *jobs: JobLike, after: Parents = None) -> list[Step]:
        """Each job waits for the one before it (the first for ``after``)."""
        steps: list[Step] = []
        for job in jobs:
            steps.append(self.add(job, after=steps[-1] if steps else after))
        return steps

    def group(self, *jobs: JobLike, after: Parents = None) -> list[Step]:
        """The jobs run side by side, each waiting for ``after`` only."""
        return [self.add(job, after=after) for job in jobs]

    def chord(self, jobs: Iterable[JobLike], callback: JobLike, *, after: Parents = None) -> Step:
        """A group, then ``callback`` once every member succeeded; it reads their results as
        ``ctx.parent_results``."""
        return self.add(callback, after=self.group(*jobs, after=after))

    def _refs(self, after: Parents) -> Iterator[int]:
        if after is None:
            return
        items: Iterable[Step | int] = (after,) if isinstance(after, (Step, int)) else after
        for item in items:
            if isinstance(item, Step):
                if item.index >= len(self._specs) or self._names[item.index] != item.name:
                    raise PgqdError(f"step {item.name!r} is not a step of this workflow")
                yield -(item.index + 1)
            else:
                yield from parent_ids(item)

    def new_steps(self) -> list[NewStep]:
        """The steps as stored: an existing parent by its id, a step of this workflow as minus its position."""
        if not self._specs:
            raise PgqdError("a workflow needs at least one step")
        trace = trace_headers()
        default = self.on_parent_failure
        return [
            NewStep(build_job(spec, trace), after, policy or default, name)
            for spec, after, policy, name in zip(self._specs, self._after, self._policies, self._names, strict=True)
        ]

    def run_of(self, stored: StepsEnqueued) -> WorkflowRun:
        assert stored.workflow_id is not None
        return WorkflowRun(stored.workflow_id, stored.ids, dict(zip(self._names, stored.ids, strict=True)))
