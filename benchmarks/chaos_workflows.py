"""The workflow mix of the chaos run: small DAGs of the chaos run's own jobs, and the account of them.

Each workflow is a root, a group of 8 after it, a callback after the group (a chord), then a chain of 2: 12
steps, every one of which must end successful with no step started before each of its parents had ended.
"""

from __future__ import annotations

from typing import Any

from pgqd import JobSpec, Workflow

STEPS_PER_WORKFLOW = 12


def workflow_mix(count: int, work_ms: float) -> list[Workflow]:
    workflows = []
    for n in range(count):
        wf = Workflow(f"chaos-{n}")

        def step(k: int, n: int = n) -> JobSpec:
            return JobSpec("chaos", {"workflow": n, "step": k, "work_ms": work_ms})

        root = wf.add(step(0))
        group = wf.group(*(step(k) for k in range(1, 9)), after=root)
        callback = wf.add(step(9), after=group)
        wf.chain(step(10), step(11), after=callback)
        workflows.append(wf)
    return workflows


async def workflow_report(conn: Any) -> dict[str, Any]:
    """Steps in all, those that did not end successful, those left waiting, and those whose first run started
    before one of their parents ended (the parent's end as the log has it, measured by its worker)."""
    steps = await conn.fetchval("SELECT count(*) FROM pgqd_workflow_steps")
    not_successful = await conn.fetchval(
        "SELECT count(*) FROM pgqd_workflow_steps AS s"
        " WHERE NOT EXISTS (SELECT 1 FROM pgqd_log AS l WHERE l.job_id = s.job_id AND l.status = 'successful')"
    )
    waiting = await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'waiting'")
    early = await conn.fetchval(
        """
        SELECT count(*) FROM pgqd_job_edges AS e JOIN pgqd_log AS p ON p.job_id = e.parent_id
        WHERE (SELECT min(r.at) FROM chaos_runs AS r WHERE r.job_id = e.child_id) < p.finished_at
        """
    )
    return {
        "steps": steps,
        "steps_not_successful": not_successful,
        "steps_left_waiting": waiting,
        "steps_started_before_a_parent_ended": early,
    }
