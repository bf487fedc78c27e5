"""Statements of operator actions that the storage port has no method for: run deferred jobs now, collect the
live jobs matching a filter for a bulk action, and turn a schedule on or off."""

from __future__ import annotations

from pgqd.sql import notices
from pgqd.sql.browse import LIVE_FILTER

# Deferred jobs become eligible at once; one NOTIFY wakes the workers of their entrypoints.
RUN_NOW = """
WITH moved AS (
    UPDATE {jobs} AS j SET status = 'queued', execute_after = now()
    WHERE j.id = ANY ($1::bigint[]) AND j.status = 'deferred'
    RETURNING j.id, j.entrypoint
),
announced AS (
    {announce}
)
SELECT COALESCE(array_agg(m.id ORDER BY m.id), ARRAY[]::bigint[])
FROM moved AS m, (SELECT count(*) FROM announced) AS a
""".replace("{announce}", notices.enqueued_from("$2", "moved"))

# Ids of live jobs matching a filter (the job search's, without its read window), newest first below $1, at
# most $10, in the states $11 the action applies to: a bulk action walks them in batches.
MATCHING_LIVE_IDS = (
    """
SELECT j.id FROM {jobs} AS j
WHERE j.id < $1 AND j.status::text = ANY ($11::text[])
  """
    + LIVE_FILTER
    + """
ORDER BY j.id DESC
LIMIT $10
"""
)

# Turning a schedule back on starts it from its next tick ($3), so the ticks it missed while off are not fired
# as misfires. The config's `enabled` applies again when a daemon next starts or reloads.
SET_SCHEDULE_ENABLED = """
UPDATE {schedules} AS s
SET enabled = $2,
    next_run = CASE WHEN $2 AND NOT s.enabled THEN $3 ELSE s.next_run END,
    updated_at = now()
WHERE s.name = $1
RETURNING s.name
"""
