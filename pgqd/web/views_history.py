"""The history page (GET /history): finished jobs over the last hour, day or week, per time slice and per
entrypoint, with the percentiles of their run time and queue wait; filterable by entrypoint and final status."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgqd.models import FINAL_STATUSES
from pgqd.ops.history import SPANS, STATUS_GROUPS, History, JobHistory
from pgqd.web.history_chart import outcome_chart, percentile_chart
from pgqd.web.rendering import render
from pgqd.web.state import web_state

STATUS_CHOICES = (*STATUS_GROUPS, *FINAL_STATUSES)
# The last hour changes by the minute; a day or a week only as the rollup moves on.
REFRESH_MS = {"1h": 5_000, "24h": 60_000, "7d": 60_000}
# While a daemon runs, it rolls up the log every minute.
ROLLUP_LATE = timedelta(minutes=5)
# Every open tab refreshes the page: within this many seconds, they share one reading of each filter.
SHARED_FOR = {"1h": 4.0, "24h": 30.0, "7d": 30.0}
SHARED_READINGS = 64


class SharedReadings:
    """The latest reading of each history filter, shared by the requests of one server for a few seconds (for a
    day or a week, only while the rollup has not moved on)."""

    def __init__(self) -> None:
        self.readings: dict[tuple[str, str | None, str | None], tuple[float, History]] = {}

    async def get(self, history: JobHistory, span: str, entrypoint: str | None, status: str | None) -> History:
        key = (span, entrypoint, status)
        now = time.monotonic()
        kept = self.readings.get(key)
        fresh = kept is not None and now - kept[0] < SHARED_FOR[span]
        if kept is not None and fresh and (SPANS[span].from_log or kept[1].rolled_at == await history.rolled_at()):
            return kept[1]
        found = await history.history(SPANS[span], entrypoint, status)
        if len(self.readings) >= SHARED_READINGS:
            self.readings = {k: v for k, v in self.readings.items() if now - v[0] < SHARED_FOR[k[0]]}
        self.readings[key] = (now, found)
        return found


async def history(request: Request) -> Response:
    state = web_state(request)
    query = request.query_params
    span_name = query.get("range") or "1h"
    entrypoint = query.get("entrypoint") or None
    status = query.get("status") or None
    problems = []
    if span_name not in SPANS:
        problems.append(f"range: use one of {', '.join(SPANS)}")
    if status is not None and status not in STATUS_CHOICES:
        problems.append(f"status: use one of {', '.join(STATUS_CHOICES)}")
    if entrypoint is not None and (len(entrypoint) > 200 or "\x00" in entrypoint):
        problems.append("entrypoint: at most 200 characters, no NUL")
    form = {"range": span_name, "entrypoint": entrypoint or "", "status": status or ""}
    common: dict[str, Any] = {
        "title": "History",
        "form": form,
        "spans": list(SPANS),
        "statuses": STATUS_CHOICES,
        "entrypoints": state.settings.entrypoints,
    }
    if problems:
        return render(request, "history.html", status_code=400, problem="; ".join(problems), **common)
    span = SPANS[span_name]
    shared: SharedReadings | None = getattr(request.app.state, "history_readings", None)
    if shared is None:
        shared = request.app.state.history_readings = SharedReadings()
    found = await shared.get(JobHistory(state.pool, state.settings.names), span_name, entrypoint, status)
    return render(
        request,
        "history.html",
        problem=None,
        history=found,
        refresh_ms=REFRESH_MS[span_name],
        rollup_behind=_rollup_behind(found),
        outcomes=outcome_chart(found.slices, span.slice_seconds),
        run_chart=percentile_chart(found.slices, span.slice_seconds, "run"),
        wait_chart=percentile_chart(found.slices, span.slice_seconds, "wait"),
        **common,
    )


def _rollup_behind(found: History) -> bool:
    if found.span.from_log:
        return False
    return found.rolled_at is None or found.rolled_at < found.now - ROLLUP_LATE


def routes() -> list[Route]:
    return [Route("/history", history)]
