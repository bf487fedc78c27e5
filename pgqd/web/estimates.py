"""Estimates for the overview's counts that stopped at their cap: the planner's row estimate, which costs a
plan and no scan. Shown labelled as an estimate beside "≥ 10,000"."""

from __future__ import annotations

import json
from typing import Any

from pgqd.sql import bulk, render
from pgqd.web.state import WebState

# The overview's columns and the status each counts.
COLUMN_STATUS = {
    "queued": "queued",
    "deferred": "deferred",
    "waiting": "waiting",
    "running": "picked",
    "held": "failed",
}
# At most this many estimates per page (each is one planning round trip).
MAX_ESTIMATES = 20


class CappedCount(int):
    """A count that stopped at its cap, carrying the planner's estimate of the true figure."""

    estimate: int | None = None

    @classmethod
    def of(cls, value: int, estimate: int | None) -> CappedCount:
        count = cls(value)
        count.estimate = estimate
        return count


async def estimate(state: WebState, entrypoint: str, status: str) -> int | None:
    plan: Any = await state.pool.fetchval(render(bulk.ESTIMATE_JOBS, state.settings.names), entrypoint, status)
    try:
        rows = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
    except (ValueError, LookupError, TypeError):
        return None
    return int(rows)


async def add_estimates(state: WebState, rows: list[dict[str, Any]], cap: int) -> None:
    """Replaces each capped count in ``rows`` by a CappedCount with its estimate."""
    done = 0
    for row in rows:
        for column, status in COLUMN_STATUS.items():
            if row[column] >= cap and done < MAX_ESTIMATES:
                guess = await estimate(state, str(row["entrypoint"]), status)
                row[column] = CappedCount.of(row[column], max(guess, cap) if guess is not None else None)
                done += 1
