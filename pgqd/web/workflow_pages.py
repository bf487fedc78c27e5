"""Workflow pages: a workflow's steps laid out by layer with their states and edges, and the parents and
children shown on a job's page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgqd.models import MAX_JOB_ID, JobLinks
from pgqd.ops.workflows import WorkflowReads, layered
from pgqd.web.rendering import not_found, render
from pgqd.web.state import web_state


def reads(request: Request) -> WorkflowReads:
    state = web_state(request)
    return WorkflowReads(state.pool, state.settings.names)


async def links_of(request: Request, job_id: int) -> JobLinks:
    """What a job page shows of the job's place in a workflow (rendered by job_links.html)."""
    return await reads(request).links(job_id)


async def workflow(request: Request) -> Response:
    workflow_id = int(request.path_params["workflow_id"])
    view = None if workflow_id > MAX_JOB_ID else await reads(request).workflow(workflow_id)
    if view is None:
        return not_found(request, f"There is no workflow {workflow_id}: it never existed, or retention removed it.")
    return render(
        request,
        "workflow.html",
        title=f"Workflow {workflow_id}",
        workflow=view,
        steps=layered(view),
        counts=sorted(view.counts().items()),
    )


def routes() -> list[Route]:
    return [Route("/workflows/{workflow_id:int}", workflow)]
