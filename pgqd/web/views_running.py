"""The running jobs (GET /running): how long each has run, on which worker process, and which stand out: past
their entrypoint's timeout, or past what a run of their entrypoint usually takes (the p95 of its successful
runs over the last hour)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgqd.ops.history import JobHistory, Percentiles, RunningJob
from pgqd.web.rendering import render
from pgqd.web.state import web_state

SHOWN = 500
# A p95 from fewer runs than this says little about what is usual.
TYPICAL_MIN_RUNS = 20
TYPICAL_WINDOW = 3600.0
# The typical run times change slowly and cost a read of the last hour of the log: the page, refreshed every
# 2 s by every open tab, reads them at most this often.
TYPICAL_MAX_AGE = 30.0


@dataclass
class TypicalRunTimes:
    """The last reading of the typical run times, shared by the requests of one server."""

    read_at: float = float("-inf")
    by_entrypoint: dict[str, Percentiles] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningRow:
    job: RunningJob
    timeout: float | None
    typical: Percentiles | None
    # "overdue": past its timeout; "slow": past its entrypoint's p95; "" otherwise.
    standing: str


def standing_of(job: RunningJob, timeout: float | None, typical: Percentiles | None) -> str:
    if timeout is not None and job.running_for > timeout:
        return "overdue"
    if typical is not None and typical.jobs >= TYPICAL_MIN_RUNS and job.running_for > typical.p95:
        return "slow"
    return ""


async def _typical(request: Request, history: JobHistory, jobs: list[RunningJob]) -> dict[str, Percentiles]:
    """The typical run times of the configured entrypoints and of those running now, read at most every
    ``TYPICAL_MAX_AGE`` seconds (an entrypoint not known at the last reading waits for the next)."""
    cache: TypicalRunTimes | None = getattr(request.app.state, "typical_run_times", None)
    if cache is None:
        cache = request.app.state.typical_run_times = TypicalRunTimes()
    if time.monotonic() - cache.read_at > TYPICAL_MAX_AGE:
        names = {*web_state(request).settings.entrypoints, *(job.entrypoint for job in jobs)}
        cache.by_entrypoint = await history.typical_run_times(names, TYPICAL_WINDOW)
        cache.read_at = time.monotonic()
    return cache.by_entrypoint


async def running(request: Request) -> Response:
    state = web_state(request)
    entrypoint = request.query_params.get("entrypoint") or None
    if entrypoint is not None and (len(entrypoint) > 200 or "\x00" in entrypoint):
        return render(
            request,
            "error.html",
            status_code=400,
            title="Bad request",
            message="entrypoint: at most 200 characters, no NUL",
        )
    history = JobHistory(state.pool, state.settings.names)
    jobs = await history.running(entrypoint, SHOWN)
    typical = await _typical(request, history, jobs)
    timeouts = dict(state.settings.run_timeouts)
    rows = []
    for job in jobs:
        timeout, usual = timeouts.get(job.entrypoint), typical.get(job.entrypoint)
        rows.append(RunningRow(job, timeout, usual, standing_of(job, timeout, usual)))
    return render(
        request,
        "running.html",
        title="Running",
        rows=rows,
        shown=SHOWN,
        entrypoint=entrypoint or "",
        entrypoints=state.settings.entrypoints,
        overdue=sum(1 for r in rows if r.standing == "overdue"),
        slow=sum(1 for r in rows if r.standing == "slow"),
    )


def routes() -> list[Route]:
    return [Route("/running", running)]
