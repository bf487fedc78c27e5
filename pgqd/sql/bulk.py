"""Statements of the web UI's bulk actions: how many live jobs a filter matches, and which held jobs cannot be
requeued because a live job holds their dedupe key."""

from __future__ import annotations

from pgqd.sql.browse import LIVE_FILTER

# The most ids one statement of a bulk action changes: each stays short, within any statement timeout, however
# many jobs the action covers (the web UI's actions, `pgqd jobs requeue --all-failed`).
BATCH = 1000

# How many live jobs in the states $11 match the filter ($2-$9), below the id $1, counted up to $10: what the
# confirmation of an action on "every matching job" shows before anything changes.
COUNT_MATCHING_LIVE = (
    """
SELECT count(*) FROM (
    SELECT 1 FROM {jobs} AS j
    WHERE j.id < $1 AND j.status::text = ANY ($11::text[])
  """
    + LIVE_FILTER
    + """
    LIMIT $10
) AS m
"""
)

# Held jobs among $1 whose dedupe key a live job holds (the unique index allows one live holder per key, held
# jobs aside): requeueing them would break that rule, so a bulk requeue leaves them and names them.
HELD_WITH_TAKEN_KEYS = """
SELECT f.id, f.dedupe_key, o.id AS holder
FROM {jobs} AS f
JOIN {jobs} AS o ON o.dedupe_key = f.dedupe_key AND o.status <> 'failed'
WHERE f.id = ANY ($1::bigint[]) AND f.status = 'failed' AND f.dedupe_key IS NOT NULL
ORDER BY f.id
"""

# The planner's estimate of how many jobs of entrypoint $1 are in status $2: what the overview shows beside a
# count that stopped at its cap, where counting exactly would read every row.
ESTIMATE_JOBS = (
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM {jobs} AS j WHERE j.entrypoint = $1 AND j.status = $2::{job_status}"
)
