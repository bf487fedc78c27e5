"""The changes (POST): bulk job actions, requeueing held jobs, pause and resume, and schedule controls.

The guard in ``pgqd.web.guard`` has already refused cross-site, read-only and token-less requests by the time
these run. Each checks its form fields (``pgqd.web.params``), makes the change, records it in the action log,
and answers with a redirect back to the page the form was on and a one-time notice. An action on every job
matching a filter first answers with a confirmation that shows how many jobs it would change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgqd.client import Client
from pgqd.cron import next_tick
from pgqd.models import NewJob
from pgqd.ops import action_log
from pgqd.ops.action_log import Action, id_target
from pgqd.sql import operations, render
from pgqd.web import bulk, params
from pgqd.web.filters import FILTER_FIELDS, job_filter
from pgqd.web.forms import request_form
from pgqd.web.rendering import redirect_with_notice, refusal
from pgqd.web.rendering import render as render_page
from pgqd.web.security import safe_return_path
from pgqd.web.state import web_state


async def record(request: Request, action: str, target: str, requested: int, changed: int, detail: str = "") -> None:
    state = web_state(request)
    entry = Action(request.state.actor, "web", action, target, requested, changed, detail)
    await action_log.record(state.pool, state.settings.names, entry)


async def job_action(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    action = params.choice("action", form.get("action"), tuple(bulk.APPLIES_TO))
    scope = params.choice("scope", form.get("scope"), ("selected", "matching"), "selected")
    back = form.get("back")
    if action is None:
        raise params.ParamProblem(f"action: which action? use one of {', '.join(bulk.APPLIES_TO)}")
    if scope == "matching":
        where = job_filter(form)
        described = _described(form)
        confirmed = params.text("confirmed", form.get("confirmed"), 20)
        if confirmed is None:
            count = await bulk.count_matching(state, action, where)
            return render_page(
                request,
                "confirm.html",
                title="Confirm",
                action=action,
                label=bulk.PAST[action],
                count=count,
                limit=bulk.COUNT_LIMIT,
                described=described,
                fields={k: form.get(k) or "" for k in FILTER_FIELDS},
                back_to=safe_return_path(back if isinstance(back, str) else None, "/jobs"),
            )
        outcome = await bulk.apply_to_matching(state, action, where)
        note = "" if outcome.finished else f" (stopped after {bulk.TIME_BUDGET:g} s: run it again for the rest)"
        detail = bulk.conflicts_note(outcome.conflicts)
        message = (
            f"{bulk.PAST[action]} {outcome.changed:,} matching job(s) ({confirmed} counted at confirmation){detail}"
            f"{note}."
        )
        await record(request, action, f"every live job matching {described}", _int(confirmed), outcome.changed, message)
        return redirect_with_notice(back, message, "/jobs")
    ids = params.job_ids("id", form.get("id"))
    if not ids:
        return redirect_with_notice(back, "No jobs selected: tick some first.", "/jobs")
    outcome = await bulk.apply(state, action, ids)
    skipped = len(ids) - outcome.changed - len(outcome.conflicts)
    note = f"; {skipped} not in a state this applies to" if skipped > 0 else ""
    message = (
        f"{bulk.PAST[action]} {outcome.changed} of {len(ids)} selected job(s){note}"
        f"{bulk.conflicts_note(outcome.conflicts)}."
    )
    await record(request, action, id_target(ids), len(ids), outcome.changed, message)
    return redirect_with_notice(back, message, "/jobs")


def _described(form: dict[str, object]) -> str:
    shown = [f"{k}={form.get(k)!r}" for k in FILTER_FIELDS if form.get(k)]
    return "the filter " + ", ".join(shown) if shown else "no filter (every live job)"


def _int(text: str | None) -> int:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) < 10 else 0


async def requeue_held(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    back = form.get("back")
    scope = params.choice("scope", form.get("scope"), ("selected", "all"), "selected")
    if scope == "all":
        entrypoint = params.text("entrypoint", form.get("entrypoint"), 10_000)
        ids = await state.primary_stats.held_ids(entrypoint)
        target = f"every held job{f' of {entrypoint}' if entrypoint else ''}"
    else:
        ids = params.job_ids("id", form.get("id"))
        target = id_target(ids)
    if not ids:
        return redirect_with_notice(back, "No held jobs selected.", "/failures")
    outcome = await bulk.requeue(state, ids)
    message = f"Requeued {outcome.changed} of {len(ids)} held job(s){bulk.conflicts_note(outcome.conflicts)}."
    await record(request, "requeue", target, len(ids), outcome.changed, message)
    return redirect_with_notice(back, message, "/failures")


async def pause_or_resume(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    entrypoint = params.entrypoint("entrypoint", form.get("entrypoint"))
    if entrypoint is None:
        return refusal(400, "Bad Request", "which entrypoint? (the form field entrypoint is empty)")
    client = Client(state.backend)
    pausing = request.url.path.endswith("/pause")
    if pausing:
        await client.pause(entrypoint)
    else:
        await client.resume(entrypoint)
    verb = "Paused" if pausing else "Resumed"
    await record(request, "pause" if pausing else "resume", entrypoint, 1, 1)
    return redirect_with_notice(form.get("back"), f"{verb} {entrypoint} on every worker.", "/")


async def schedule_action(request: Request) -> Response:
    state = web_state(request)
    form = await request_form(request)
    name = params.text("schedule", request.path_params["name"])
    action = params.choice("action", request.path_params["action"], ("run", "enable", "disable"))
    found = {s.name: s for s in await state.primary_stats.schedules()}
    schedule = found.get(name or "")
    if schedule is None:
        return refusal(404, "Not Found", f"there is no schedule {name!r}")
    names = state.settings.names
    if action == "run":
        headers = json.dumps({"pgqd-schedule": name, "pgqd-schedule-run": "manual"})
        job = NewJob(schedule.entrypoint, schedule.payload, schedule.priority, headers=headers)
        ids = await state.backend.enqueue([job], "raise")
        message = f"Enqueued job {ids[0]} for schedule {name} now."
    else:
        upcoming = next_tick(schedule.cron, schedule.timezone, datetime.now(UTC))
        await state.pool.execute(render(operations.SET_SCHEDULE_ENABLED, names), name, action == "enable", upcoming)
        message = f"Schedule {name} {action}d (until the config says otherwise at the next start or reload)."
    await record(request, f"schedule {action}", f"schedule {name}", 1, 1, message)
    return redirect_with_notice(form.get("back"), message, "/schedules")


def routes() -> list[Route]:
    return [
        Route("/jobs/action", job_action, methods=["POST"]),
        Route("/failures/requeue", requeue_held, methods=["POST"]),
        Route("/entrypoints/pause", pause_or_resume, methods=["POST"]),
        Route("/entrypoints/resume", pause_or_resume, methods=["POST"]),
        Route("/schedules/{name}/{action}", schedule_action, methods=["POST"]),
    ]
