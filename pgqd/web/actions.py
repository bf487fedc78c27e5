"""The changes (POST): bulk job actions, requeueing held jobs, pause and resume, and schedule controls.

The guard in ``pgqd.web.app`` has already refused cross-site, read-only and token-less requests by the time
these run. Each answers with a redirect back to the page the form was on and a one-time notice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgqd.client import Client
from pgqd.daemon.scheduler import next_tick
from pgqd.errors import DedupeConflict
from pgqd.models import NewJob
from pgqd.ops.browse import MAX_ID
from pgqd.sql import operations, render
from pgqd.web.app import WebState, redirect_with_notice, refusal, request_form, web_state
from pgqd.web.filters import FilterProblem, job_filter

# The live states each action can change; a bulk action on "everything matching" touches only these.
APPLIES_TO = {
    "cancel": ("queued", "deferred", "suspect", "picked", "failed"),
    "delete": ("queued", "deferred", "suspect", "failed"),
    "requeue": ("failed",),
    "retry": ("deferred", "failed"),
}
BATCH = 1000
# A bulk action over a huge match stops after this long and says how far it got; running it again goes on.
TIME_BUDGET = 20.0


async def apply(state: WebState, action: str, ids: Sequence[int]) -> int:
    """Applies one action to a batch of jobs; returns how many it changed."""
    backend = state.backend
    if action in ("cancel", "delete"):
        result = await backend.cancel(ids, "canceled" if action == "cancel" else "deleted")
        return len(result.canceled) + len(result.signalled)
    if action == "requeue":
        return len(await backend.requeue(ids))
    moved = await state.pool.fetchval(
        render(operations.RUN_NOW, state.settings.names), list(ids), state.settings.names.channel
    )
    return len(moved) + len(await backend.requeue([i for i in ids if i not in set(moved)]))


async def job_action(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    action = form.get("action", "")
    back = form.get("back")
    if action not in APPLIES_TO:
        return refusal(400, "Bad Request", f"unknown action {action!r}")
    try:
        if form.get("scope") == "matching":
            changed, finished = await _apply_to_matching(state, action, form)
            note = "" if finished else " (stopped after 20 s: run it again for the rest)"
            return redirect_with_notice(back, f"{_past(action)} {changed} matching job(s){note}", "/jobs")
        ids = _ids(form.get("id"))
        if not ids:
            return redirect_with_notice(back, "No jobs selected: tick some first.", "/jobs")
        changed = await apply(state, action, ids)
    except FilterProblem as problem:
        return refusal(400, "Bad Request", str(problem))
    except DedupeConflict as conflict:
        return redirect_with_notice(back, f"Not requeued: {conflict}", "/jobs")
    skipped = len(ids) - changed
    note = f"; {skipped} not in a state this applies to" if skipped else ""
    return redirect_with_notice(back, f"{_past(action)} {changed} of {len(ids)} selected job(s){note}.", "/jobs")


async def _apply_to_matching(state: WebState, action: str, form: dict[str, object]) -> tuple[int, bool]:
    where = job_filter({k: str(v) for k, v in form.items() if isinstance(v, str)})
    statuses = APPLIES_TO[action]
    if where.status not in (None, "live"):
        statuses = tuple(s for s in statuses if s == where.status)
    if not statuses:
        return 0, True
    statement = render(operations.MATCHING_LIVE_IDS, state.settings.names)
    cursor, changed, started = MAX_ID, 0, time.monotonic()
    while time.monotonic() - started < TIME_BUDGET:
        rows = await state.pool.fetch(statement, cursor, *where.live_filter_args(), BATCH, list(statuses))
        ids = [r["id"] for r in rows]
        if ids:
            changed += await apply(state, action, ids)
            cursor = min(ids)
        if len(ids) < BATCH:
            return changed, True
    return changed, False


def _ids(value: object) -> list[int]:
    values = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    ids = []
    for text in values:
        if not text.isdigit() or len(text) > 18:
            raise FilterProblem(f"id: {text!r} is not a job id")
        ids.append(int(text))
    return list(dict.fromkeys(ids))


def _past(action: str) -> str:
    return {"cancel": "Canceled", "delete": "Deleted", "requeue": "Requeued", "retry": "Retried now"}[action]


async def requeue_held(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    back = form.get("back")
    try:
        if form.get("scope") == "all":
            entrypoint = form.get("entrypoint") or None
            ids = await state.stats.held_ids(entrypoint)
        else:
            ids = _ids(form.get("id"))
        if not ids:
            return redirect_with_notice(back, "No held jobs selected.", "/failures")
        requeued = await state.backend.requeue(ids)
    except FilterProblem as problem:
        return refusal(400, "Bad Request", str(problem))
    except DedupeConflict as conflict:
        return redirect_with_notice(back, f"Not requeued: {conflict}", "/failures")
    return redirect_with_notice(back, f"Requeued {len(requeued)} held job(s).", "/failures")


async def pause_or_resume(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    entrypoint = str(form.get("entrypoint") or "")
    if not entrypoint:
        return refusal(400, "Bad Request", "which entrypoint? (the form field entrypoint is empty)")
    client = Client(state.backend)
    pausing = request.url.path.endswith("/pause")
    if pausing:
        await client.pause(entrypoint)
    else:
        await client.resume(entrypoint)
    verb = "Paused" if pausing else "Resumed"
    return redirect_with_notice(form.get("back"), f"{verb} {entrypoint} on every worker.", "/")


async def schedule_action(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    name, action = request.path_params["name"], request.path_params["action"]
    found = {s.name: s for s in await state.stats.schedules()}
    schedule = found.get(name)
    if schedule is None:
        return refusal(404, "Not Found", f"there is no schedule {name!r}")
    names = state.settings.names
    if action == "run":
        headers = json.dumps({"pgqd-schedule": name, "pgqd-schedule-run": "manual"})
        job = NewJob(schedule.entrypoint, schedule.payload, schedule.priority, headers=headers)
        ids = await state.backend.enqueue([job], "raise")
        message = f"Enqueued job {ids[0]} for schedule {name} now."
    elif action in ("enable", "disable"):
        upcoming = next_tick(schedule.cron, schedule.timezone, datetime.now(UTC))
        await state.pool.execute(render(operations.SET_SCHEDULE_ENABLED, names), name, action == "enable", upcoming)
        message = f"Schedule {name} {action}d (until the config says otherwise at the next start or reload)."
    else:
        return refusal(404, "Not Found", f"unknown schedule action {action!r}")
    return redirect_with_notice(form.get("back"), message, "/schedules")


def routes() -> list[Route]:
    return [
        Route("/jobs/action", job_action, methods=["POST"]),
        Route("/failures/requeue", requeue_held, methods=["POST"]),
        Route("/entrypoints/pause", pause_or_resume, methods=["POST"]),
        Route("/entrypoints/resume", pause_or_resume, methods=["POST"]),
        Route("/schedules/{name}/{action}", schedule_action, methods=["POST"]),
    ]
