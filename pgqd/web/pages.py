"""The pages (GET): overview, job search, one job, held failures, schedules and workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pgqd.identifiers import MAX_ENTRYPOINT_NAME
from pgqd.models import MAX_JOB_ID
from pgqd.ops import action_log
from pgqd.ops.browse import SEARCH_WINDOW, JobFilter
from pgqd.web import params, present, workflow_pages
from pgqd.web.chart import throughput_chart
from pgqd.web.estimates import add_estimates
from pgqd.web.filters import FILTER_FIELDS, STATUS_CHOICES, FilterProblem, job_filter, page_size
from pgqd.web.rendering import not_found, render
from pgqd.web.state import web_state
from pgqd.web.views_seek import seek_to_time, within

# Counts on the overview stop here (see QueueStats.queues): beyond it a page shows "≥ 10,000" and an estimate.
COUNT_CAP = 10_000
ACTIONS_PAGE = 100


async def overview_context(request: Request) -> dict[str, Any]:
    state = web_state(request)
    stats = state.stats
    summaries = await stats.queues(COUNT_CAP)
    pauses = await stats.pauses()
    known = {s.entrypoint for s in summaries}
    rows = [
        {
            "entrypoint": s.entrypoint,
            "queued": s.queued,
            "deferred": s.deferred,
            "running": s.running,
            "held": s.held,
            "suspects": s.suspects,
            "waiting": s.waiting,
            "oldest": s.oldest_eligible_age,
            "paused": s.paused,
        }
        for s in summaries
    ]
    rows += [
        {
            "entrypoint": name,
            "queued": 0,
            "deferred": 0,
            "running": 0,
            "held": 0,
            "suspects": 0,
            "waiting": 0,
            "oldest": None,
            "paused": pauses.is_paused(name),
        }
        for name in state.settings.entrypoints
        if name not in known
    ]
    rows.sort(key=lambda r: str(r["entrypoint"]))
    await add_estimates(state, rows, COUNT_CAP)
    now = datetime.now(UTC)
    series = await stats.throughput_series(3600.0, 60.0)
    chart = throughput_chart([(b.start, b.succeeded, b.failed) for b in series], now)
    return {"queues": rows, "chart": chart, "cap": COUNT_CAP, "now": now, "all_paused": pauses.all_paused}


async def overview(request: Request) -> Response:
    return render(request, "overview.html", title="Overview", **await overview_context(request))


async def overview_live(request: Request) -> Response:
    """The live part of the overview, fetched by the page every two seconds."""
    return render(request, "overview_live.html", **await overview_context(request))


async def jobs(request: Request) -> Response:
    state = web_state(request)
    try:
        job_id = _job_id(request)
        where, before, limit = job_filter(request.query_params), _before(request), page_size(request.query_params)
    except FilterProblem as problem:
        return render(
            request, "jobs.html", status_code=400, title="Jobs", problem=str(problem), **_jobs_form(request, None)
        )
    if job_id is not None:
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)
    bounds = await seek_to_time(state, where)
    page = within(bounds, await state.search.page(where, before=before, limit=limit, bounds=bounds))
    rows = [{**r, "payload_text": present.payload_head(r["payload_head"])} for r in page.rows]
    older = None
    if page.next_before is not None:
        older = "/jobs?" + urlencode({**_kept_query(request), "before": page.next_before})
    return render(
        request,
        "jobs.html",
        title="Jobs",
        problem=None,
        rows=rows,
        older=older,
        window_edge=page.window_edge,
        window=SEARCH_WINDOW,
        newest="/jobs?" + urlencode(_kept_query(request)) if before is not None else None,
        **_jobs_form(request, where),
    )


def _kept_query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k != "before" and v}


def _job_id(request: Request) -> int | None:
    """The job id field: a search for one job goes straight to its page."""
    text = request.query_params.get("id", "").strip().lstrip("#")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_JOB_ID:
        raise FilterProblem(f"id: {text!r} is not a job id")
    return int(text)


def _before(request: Request) -> int | None:
    return params.job_id("before", request.query_params.get("before"))


def _jobs_form(request: Request, where: JobFilter | None) -> dict[str, Any]:
    query = request.query_params
    return {
        "filter": {key: query.get(key, "") for key in FILTER_FIELDS},
        "statuses": STATUS_CHOICES,
        "entrypoints": web_state(request).settings.entrypoints,
        "filtered": where is not None and where != JobFilter(),
        "query_string": urlencode(_kept_query(request)),
    }


async def job(request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    if job_id > MAX_JOB_ID:
        return not_found(request, f"There is no job {job_id}.")
    detail = await web_state(request).stats.job(job_id)
    if detail is None:
        return not_found(request, f"There is no job {job_id}: it never existed, or it left the log after retention.")
    return render(
        request,
        "job.html",
        title=f"Job {job_id}",
        job=detail,
        payload=present.payload_view(detail.payload),
        headers=sorted((detail.headers or {}).items()),
        result=present.pretty_json_value(detail.result) if detail.result is not None else None,
        errors=present.error_history(detail),
        links=await workflow_pages.links_of(request, job_id),
    )


async def failures(request: Request) -> Response:
    state = web_state(request)
    entrypoint = params.text("entrypoint", request.query_params.get("entrypoint"), MAX_ENTRYPOINT_NAME)
    after_id = params.job_id("after", request.query_params.get("after"))
    held = await state.stats.held_jobs(entrypoint, after_id=after_id, limit=100)
    more = None
    if len(held) == 100:
        wanted = {"entrypoint": entrypoint, "after": held[-1].id}
        more = "/failures?" + urlencode({k: v for k, v in wanted.items() if v})
    return render(request, "failures.html", title="Failures", held=held, entrypoint=entrypoint or "", more=more)


async def actions(request: Request) -> Response:
    """The action log: who changed what from the web UI or the CLI, newest first."""
    state = web_state(request)
    before = params.job_id("before", request.query_params.get("before"), "an action log id")
    entries = await action_log.recent(state.pool, state.settings.names, before, ACTIONS_PAGE)
    older = f"/actions?before={entries[-1].id}" if len(entries) == ACTIONS_PAGE else None
    return render(request, "actions.html", title="Action log", entries=entries, older=older)


async def schedules(request: Request) -> Response:
    return render(request, "schedules.html", title="Schedules", schedules=await web_state(request).stats.schedules())


async def workers(request: Request) -> Response:
    return render(request, "workers.html", title="Workers", workers=await web_state(request).stats.workers())


def routes() -> list[Route]:
    return [
        Route("/", overview),
        Route("/live/overview", overview_live),
        Route("/jobs", jobs),
        Route("/jobs/{job_id:int}", job),
        Route("/failures", failures),
        Route("/schedules", schedules),
        Route("/workers", workers),
        Route("/actions", actions),
    ]
