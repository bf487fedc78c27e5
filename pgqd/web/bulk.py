"""Bulk job actions: apply one action to a batch of ids, requeue what can be requeued (naming the dedupe
conflicts), and count or walk every live job matching a filter."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pgqd.errors import DedupeConflict
from pgqd.models import MAX_JOB_ID
from pgqd.ops.browse import JobFilter
from pgqd.sql import bulk, operations, render
from pgqd.web.state import WebState

# The live states each action can change; a bulk action on "everything matching" touches only these.
APPLIES_TO = {
    "cancel": ("queued", "deferred", "suspect", "picked", "failed"),
    "delete": ("queued", "deferred", "suspect", "failed"),
    "requeue": ("failed",),
    "retry": ("deferred", "failed"),
}
PAST = {"cancel": "Canceled", "delete": "Deleted", "requeue": "Requeued", "retry": "Retried now"}
BATCH = bulk.BATCH
# A bulk action over a huge match stops after this long and says how far it got; running it again goes on.
TIME_BUDGET = 20.0
# The confirmation counts up to this many matching jobs; beyond it, it says "more than".
COUNT_LIMIT = 1_000_000


@dataclass(frozen=True)
class Conflict:
    """A held job left held: a live job (``holder``, when known) holds its dedupe key."""

    id: int
    dedupe_key: str
    holder: int | None


@dataclass
class Outcome:
    changed: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    finished: bool = True

    def add(self, other: Outcome) -> None:
        self.changed += other.changed
        self.conflicts.extend(other.conflicts)


async def requeue(state: WebState, ids: Sequence[int]) -> Outcome:
    """Requeues the held jobs among ``ids`` whose dedupe key is free; the others stay held and are reported."""
    names = state.settings.names
    rows = await state.pool.fetch(render(bulk.HELD_WITH_TAKEN_KEYS, names), list(ids))
    conflicts = [Conflict(r["id"], r["dedupe_key"], r["holder"]) for r in rows]
    blocked = {c.id for c in conflicts}
    free = [i for i in ids if i not in blocked]
    try:
        return Outcome(len(await state.backend.requeue(free)) if free else 0, conflicts)
    except DedupeConflict:
        # Two of the batch share a key, or a job took one since the check: one at a time, to requeue the rest.
        outcome = Outcome(0, conflicts)
        for job_id in free:
            try:
                outcome.changed += len(await state.backend.requeue([job_id]))
            except DedupeConflict as conflict:
                outcome.conflicts.append(Conflict(job_id, ", ".join(conflict.keys), None))
        return outcome


async def apply(state: WebState, action: str, ids: Sequence[int]) -> Outcome:
    """Applies one action to a batch of jobs."""
    backend = state.backend
    if action in ("cancel", "delete"):
        result = await backend.cancel(ids, "canceled" if action == "cancel" else "deleted")
        return Outcome(len(result.canceled) + len(result.signalled))
    if action == "requeue":
        return await requeue(state, ids)
    moved = await state.pool.fetchval(
        render(operations.RUN_NOW, state.settings.names), list(ids), state.settings.names.channel
    )
    outcome = await requeue(state, [i for i in ids if i not in set(moved)])
    outcome.changed += len(moved)
    return outcome


def matching_statuses(action: str, where: JobFilter) -> tuple[str, ...]:
    statuses = APPLIES_TO[action]
    if where.status not in (None, "live"):
        statuses = tuple(s for s in statuses if s == where.status)
    return statuses


async def count_matching(state: WebState, action: str, where: JobFilter) -> int:
    """How many live jobs the action would change (up to COUNT_LIMIT)."""
    statuses = matching_statuses(action, where)
    if not statuses:
        return 0
    statement = render(bulk.COUNT_MATCHING_LIVE, state.settings.names)
    count: int = await state.pool.fetchval(
        statement, MAX_JOB_ID, *where.live_filter_args(), COUNT_LIMIT, list(statuses)
    )
    return count


async def apply_to_matching(state: WebState, action: str, where: JobFilter) -> Outcome:
    statuses = matching_statuses(action, where)
    outcome = Outcome()
    if not statuses:
        return outcome
    statement = render(operations.MATCHING_LIVE_IDS, state.settings.names)
    cursor, started = MAX_JOB_ID, time.monotonic()
    while time.monotonic() - started < TIME_BUDGET:
        rows = await state.pool.fetch(statement, cursor, *where.live_filter_args(), BATCH, list(statuses))
        ids = [r["id"] for r in rows]
        if ids:
            outcome.add(await apply(state, action, ids))
            cursor = min(ids)
        if len(ids) < BATCH:
            return outcome
    outcome.finished = False
    return outcome


def conflicts_note(conflicts: Sequence[Conflict]) -> str:
    """What the operator is told about jobs left held, with their ids."""
    if not conflicts:
        return ""
    shown = []
    for c in conflicts[:20]:
        holder = f" (held by #{c.holder})" if c.holder is not None else ""
        shown.append(f"#{c.id} key {c.dedupe_key!r}{holder}")
    more = f" and {len(conflicts) - 20} more" if len(conflicts) > 20 else ""
    return (
        f"; {len(conflicts)} left held because a live job holds their dedupe key: {', '.join(shown)}{more}"
        " (cancel or wait for that job, then requeue them)"
    )
