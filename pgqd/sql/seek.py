"""Seeking the job search to a creation time: where in id order the jobs created before a moment end.

Ids are handed out in creation order, so "created before T" is "id below some cursor" in the jobs table and in
the log alike. The cursor is found by a binary search over each table's primary key (a few dozen index probes,
whatever the table's size), so a time filter jumps straight to its time instead of paging there.
"""

from __future__ import annotations

# The first id at or after which every job of the table was created at $1 or later (NULL: an empty table). Each
# step probes the first row at or above the middle of [lo, hi): created before $1, the answer is above it;
# otherwise (or no row there) it is at most the middle.
_CURSOR = """(
    WITH RECURSIVE probe(lo, hi) AS (
        SELECT (SELECT min(t.{id}) FROM {table} AS t), (SELECT max(t.{id}) FROM {table} AS t) + 1
        UNION ALL
        SELECT CASE WHEN m.created_at < $1::timestamptz THEN m.{id} + 1 ELSE p.lo END,
               CASE WHEN m.created_at < $1::timestamptz THEN p.hi ELSE p.lo + (p.hi - p.lo) / 2 END
        FROM probe AS p
        LEFT JOIN LATERAL (
            SELECT t.{id}, t.created_at FROM {table} AS t
            WHERE t.{id} >= p.lo + (p.hi - p.lo) / 2 ORDER BY t.{id} LIMIT 1
        ) AS m ON true
        WHERE p.lo < p.hi
    )
    SELECT greatest(p.lo, p.hi) FROM probe AS p WHERE p.lo >= p.hi
)"""

# The cursors of jobs created before $1 in the live table and in the log.
CREATED_CURSORS = (
    "SELECT "
    + _CURSOR.format(table="{jobs}", id="id")
    + " AS live, "
    + _CURSOR.format(table="{log}", id="job_id")
    + " AS finished"
)

# The ids of the live jobs with dedupe key $1: at most one not held (the unique index), and the held ones, few,
# found on their own partial index.
LIVE_DEDUPE_KEY_IDS = """
SELECT min(k.id) AS first, max(k.id) AS last FROM (
    SELECT j.id FROM {jobs} AS j WHERE j.dedupe_key = $1 AND j.status <> 'failed'
    UNION ALL
    SELECT j.id FROM {jobs} AS j WHERE j.status = 'failed' AND j.dedupe_key = $1
) AS k
"""
