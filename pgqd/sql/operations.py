"""Statements of operator actions that the storage port has no method for: run deferred jobs now, collect the
live jobs matching a filter for a bulk action, and turn a schedule on or off."""

from __future__ import annotations

# Deferred jobs become eligible at once; one NOTIFY wakes the workers of their entrypoints.
RUN_NOW = """
WITH moved AS (
    UPDATE {jobs} AS j SET status = 'queued', execute_after = now()
    WHERE j.id = ANY ($1::bigint[]) AND j.status = 'deferred'
    RETURNING j.id, j.entrypoint
),
announced AS (
    SELECT pg_notify($2, json_build_object('t', 'enqueued', 'e', array_agg(DISTINCT m.entrypoint))::text)
    FROM moved AS m HAVING count(*) > 0
)
SELECT COALESCE(array_agg(m.id ORDER BY m.id), ARRAY[]::bigint[])
FROM moved AS m, (SELECT count(*) FROM announced) AS a
"""

# Ids of live jobs matching a filter (the job search's, without its read window), newest first below $1, at
# most $8: a bulk action walks them in batches. $2 entrypoint, $3 the statuses the action applies to, $4 / $5
# created between, $6 LIKE pattern for error text, $7 LIKE pattern for payloads in "escape" encoding.
MATCHING_LIVE_IDS = """
SELECT j.id FROM {jobs} AS j
WHERE j.id < $1
  AND ($2::text IS NULL OR j.entrypoint = $2)
  AND j.status::text = ANY ($3::text[])
  AND ($4::timestamptz IS NULL OR j.created_at >= $4)
  AND ($5::timestamptz IS NULL OR j.created_at < $5)
  AND ($6::text IS NULL
       OR concat_ws(' ', j.last_error->>'type', j.last_error->>'message', j.last_error->>'traceback') ILIKE $6
       OR encode(j.payload, 'escape') ILIKE $7)
ORDER BY j.id DESC
LIMIT $8
"""

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
