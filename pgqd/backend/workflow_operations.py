"""The workflow operations, written once for every driver like those of ``operations``: enqueueing steps that
wait for others, reading a job's links and a whole workflow, and cancelling one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgqd.backend import operations
from pgqd.backend.operations import Operation, Query
from pgqd.models import (
    CancelResult,
    JobLinks,
    LinkedJob,
    NewStep,
    StepsEnqueued,
    WorkflowStep,
    WorkflowView,
)
from pgqd.sql.statements import Statements
from pgqd.sql.workflows import workflow_statements_for


def enqueue_steps(
    sql: Statements, steps: Sequence[NewStep], workflow: str | None, make_workflow: bool
) -> Operation[StepsEnqueued]:
    if not steps:
        return StepsEnqueued([], None)
    jobs = [step.job for step in steps]
    edge_child = [index for index, step in enumerate(steps, 1) for _ in step.after]
    edge_parent = [parent for step in steps for parent in step.after]
    rows = yield Query(
        workflow_statements_for(sql.names).enqueue_steps,
        (
            [j.entrypoint for j in jobs],
            [j.payload for j in jobs],
            [j.headers for j in jobs],
            [j.priority for j in jobs],
            [j.delay for j in jobs],
            [j.execute_after for j in jobs],
            [j.dedupe_key for j in jobs],
            [step.on_parent_failure for step in steps],
            [step.step for step in steps],
            edge_child,
            edge_parent,
            make_workflow,
            workflow,
            sql.names.channel,
        ),
    )
    # The function itself announces the steps it made claimable (waiting ones are announced when released).
    return StepsEnqueued([row[0] for row in rows], rows[0][1] if rows else None)


def parent_results(sql: Statements, job_id: int) -> Operation[dict[int | str, Any]]:
    rows = yield Query(workflow_statements_for(sql.names).parent_results, (job_id,))
    return results_by_parent((row[0], row[1], json.loads(row[2])) for row in rows)


def results_by_parent(rows: Any) -> dict[int | str, Any]:
    """Each parent's result under its job id, and under its step name too when it has one."""
    found: dict[int | str, Any] = {}
    for parent_id, step, result in rows:
        found[parent_id] = result
        if step is not None:
            found[step] = result
    return found


def job_links(sql: Statements, job_id: int) -> Operation[JobLinks]:
    rows = yield Query(workflow_statements_for(sql.names).job_links, (job_id,))
    parents = [LinkedJob(r[1], r[2], r[3], r[4]) for r in rows if r[0] == "parent"]
    children = [LinkedJob(r[1], r[2], r[3], r[4]) for r in rows if r[0] == "child"]
    workflow_id = next((r[5] for r in rows if r[0] == "workflow"), None)
    return JobLinks(workflow_id, parents, children)


def workflow(sql: Statements, workflow_id: int) -> Operation[WorkflowView | None]:
    statements = workflow_statements_for(sql.names)
    found = yield Query(statements.workflow, (workflow_id,))
    if not found:
        return None
    rows = yield Query(statements.workflow_steps, (workflow_id,))
    steps = [WorkflowStep(r[0], r[1], r[2], r[3], list(r[4])) for r in rows]
    return WorkflowView(found[0][0], found[0][1], found[0][2], steps)


def cancel_workflow(sql: Statements, workflow_id: int) -> Operation[CancelResult]:
    rows = yield Query(workflow_statements_for(sql.names).workflow_live_jobs, (workflow_id,))
    return (yield from operations.cancel(sql, list(rows[0][0])))
