"""The statements of workflows (migration 0012): enqueueing jobs that wait for others, and reading workflows.

The release of waiting jobs is not here: it happens in the statements that end jobs (RECORD_OUTCOMES,
CANCEL_JOBS, the rescues), through the settle_children function.
"""

from __future__ import annotations

import functools

from pgqd.identifiers import Names
from pgqd.sql import render

# One call for any number of steps and edges: the function says why it is race-free.
ENQUEUE_STEPS = """
SELECT s.id, s.workflow_id
FROM {enqueue_steps}($1::text[], $2::bytea[], $3::text[], $4::integer[], $5::double precision[],
                     $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::integer[], $11::bigint[],
                     $12::boolean, $13::text, $14::text) AS s
"""

# What a handler reads as ctx.parent_results: copied onto the edges when each parent succeeded.
PARENT_RESULTS = """
SELECT e.parent_id, s.step, e.result::text
FROM {job_edges} AS e LEFT JOIN {workflow_steps} AS s ON s.job_id = e.parent_id
WHERE e.child_id = $1::bigint AND e.result IS NOT NULL
"""

_STATE_OF = """
LEFT JOIN {jobs} AS j ON j.id = {id}
LEFT JOIN {log} AS l ON l.job_id = {id}
"""

# A job's workflow, parents and children, each with its status now (live, or final from the log).
JOB_LINKS = (
    """
SELECT 'parent' AS side, e.parent_id AS id, s.step, COALESCE(j.entrypoint, l.entrypoint) AS entrypoint,
       COALESCE(j.status::text, l.status::text) AS status, NULL::bigint AS workflow_id
FROM {job_edges} AS e LEFT JOIN {workflow_steps} AS s ON s.job_id = e.parent_id"""
    + _STATE_OF.replace("{id}", "e.parent_id")
    + """WHERE e.child_id = $1::bigint
UNION ALL
SELECT 'child', e.child_id, s.step, COALESCE(j.entrypoint, l.entrypoint), COALESCE(j.status::text, l.status::text),
       NULL
FROM {job_edges} AS e LEFT JOIN {workflow_steps} AS s ON s.job_id = e.child_id"""
    + _STATE_OF.replace("{id}", "e.child_id")
    + """WHERE e.parent_id = $1::bigint
UNION ALL
SELECT 'workflow', NULL, NULL, NULL, NULL, s.workflow_id FROM {workflow_steps} AS s WHERE s.job_id = $1::bigint
ORDER BY 1, 2
"""
)

WORKFLOW = "SELECT w.id, w.name, w.created_at FROM {workflows} AS w WHERE w.id = $1::bigint"

WORKFLOW_STEPS = (
    """
SELECT s.job_id, s.step, COALESCE(j.entrypoint, l.entrypoint) AS entrypoint,
       COALESCE(j.status::text, l.status::text) AS status,
       COALESCE((SELECT array_agg(e.parent_id ORDER BY e.parent_id) FROM {job_edges} AS e
                 WHERE e.child_id = s.job_id), ARRAY[]::bigint[]) AS parents
FROM {workflow_steps} AS s"""
    + _STATE_OF.replace("{id}", "s.job_id")
    + """WHERE s.workflow_id = $1::bigint
ORDER BY s.job_id
"""
)

# The steps of a workflow that have not ended, for cancelling it.
WORKFLOW_LIVE_JOBS = """
SELECT COALESCE(array_agg(j.id ORDER BY j.id), ARRAY[]::bigint[])
FROM {workflow_steps} AS s JOIN {jobs} AS j ON j.id = s.job_id
WHERE s.workflow_id = $1::bigint
"""


class WorkflowStatements:
    """The statements above, rendered for one install."""

    def __init__(self, names: Names) -> None:
        self.enqueue_steps = render(ENQUEUE_STEPS, names)
        self.parent_results = render(PARENT_RESULTS, names)
        self.job_links = render(JOB_LINKS, names)
        self.workflow = render(WORKFLOW, names)
        self.workflow_steps = render(WORKFLOW_STEPS, names)
        self.workflow_live_jobs = render(WORKFLOW_LIVE_JOBS, names)


@functools.lru_cache(maxsize=64)
def workflow_statements_for(names: Names) -> WorkflowStatements:
    return WorkflowStatements(names)
