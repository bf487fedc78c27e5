"""Reading workflows for operators, shared by the web UI, ``pgqd jobs show`` and the MCP tools: a job's parents
and children, and a workflow's steps laid out by layer (each step one deeper than its deepest parent)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pgqd.backend.postgres import PostgresBackend
from pgqd.identifiers import Names
from pgqd.models import JobLinks, LinkedJob, WorkflowStep, WorkflowView


@dataclass(frozen=True, slots=True)
class LaidOutStep:
    depth: int
    step: WorkflowStep


def layered(view: WorkflowView) -> list[LaidOutStep]:
    """The steps in enqueue order, each with its depth: 0 for a step waiting for no step of this workflow, else
    one more than its deepest parent (parents always come before their children)."""
    depth: dict[int, int] = {}
    laid = []
    for step in view.steps:
        inside = [depth[p] for p in step.parents if p in depth]
        depth[step.job_id] = 1 + max(inside) if inside else 0
        laid.append(LaidOutStep(depth[step.job_id], step))
    return laid


def workflow_as_dict(view: WorkflowView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "created_at": view.created_at.isoformat(),
        "ended": view.ended,
        "counts": view.counts(),
        "steps": [{**asdict(laid.step), "depth": laid.depth} for laid in layered(view)],
    }


def links_as_dict(links: JobLinks) -> dict[str, Any]:
    return asdict(links)


def workflow_lines(view: WorkflowView) -> list[str]:
    """The workflow as an indented tree of text lines, for a terminal."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(view.counts().items()))
    lines = [f"workflow {view.id} {view.name or ''}".rstrip() + f": {len(view.steps)} steps ({counts})"]
    for laid in layered(view):
        step = laid.step
        waits = f"  after {', '.join(map(str, step.parents))}" if step.parents else ""
        lines.append(f"{'  ' * (laid.depth + 1)}{step.job_id} {step.step or '-'} [{step.status or 'pruned'}]{waits}")
    return lines


def linked_line(job: LinkedJob) -> str:
    return f"{job.id} {job.step or ''} {job.entrypoint or '?'} [{job.status or 'pruned'}]".replace("  ", " ")


class WorkflowReads:
    """The read side of workflows on an asyncpg connection or pool."""

    def __init__(self, db: Any, names: Names) -> None:
        self._backend = PostgresBackend(db, names)

    async def links(self, job_id: int) -> JobLinks:
        return await self._backend.job_links(job_id)

    async def workflow(self, workflow_id: int) -> WorkflowView | None:
        return await self._backend.workflow(workflow_id)
