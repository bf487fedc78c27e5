"""The job search's statements: live and finished jobs by entrypoint, status, creation time and text in the
payload or the error, newest first, in pages. It answers in bounded time whatever the table sizes, as it reads
a bounded window of the newest rows (see ``pgqd.ops.browse``)."""

from __future__ import annotations

# The job search reads at most $2 of the newest rows below the cursor $1 from each table ($3: read live jobs,
# $4: read the log), then filters them. Its cost is bounded by the window, not by the table; when a window came
# back full, rows older than its last one are not looked at, and `edge` says where the next search starts.
# Filters: $5 entrypoint, $6 status, $7 / $8 created between, $9 LIKE pattern for error text, $10 LIKE pattern
# for payloads (in PostgreSQL's "escape" encoding, which any byte string has), $11 rows wanted, $12 dedupe key,
# $13 / $14 a header's name and value (finished jobs keep no headers); $15 / $16 the range of ids worth reading in
# the jobs table ([$15, $16): jobs created between $7 and $8, see pgqd.sql.seek), $17 / $18 the same in the log;
# $19 / $20 finished between (finished jobs only). The log is read only in the day partitions between the later
# of $7 and $19 (a job finishes after it was created) and $20: a search over one day reads one or two
# partitions, however long the log. The bounds are written as plain comparisons so that PostgreSQL prunes
# partitions with them.
SEARCH_JOBS = """
WITH live AS (
    SELECT j.id, j.entrypoint, j.status::text AS status, j.priority, j.attempts, j.created_at, j.execute_after,
           j.picked_at AS started_at, NULL::timestamptz AS finished_at, j.last_error->>'type' AS error_type,
           j.last_error->>'message' AS error_message, j.payload,
           concat_ws(' ', j.last_error->>'type', j.last_error->>'message', j.last_error->>'traceback') AS error_text,
           j.dedupe_key, j.headers
    FROM {jobs} AS j
    WHERE $3 AND j.id < least($1::bigint, $16::bigint) AND j.id >= $15::bigint
    ORDER BY j.id DESC
    LIMIT $2
),
done AS (
    SELECT l.job_id AS id, l.entrypoint, l.status::text AS status, l.priority, l.attempts, l.created_at,
           NULL::timestamptz AS execute_after, l.started_at, l.finished_at, l.error_type, l.error_message,
           NULL::bytea AS payload, concat_ws(' ', l.error_type, l.error_message, l.error_traceback) AS error_text,
           l.dedupe_key, NULL::jsonb AS headers
    FROM {log} AS l
    WHERE $4 AND l.job_id < least($1::bigint, $18::bigint) AND l.job_id >= $17::bigint
      AND l.finished_at >= GREATEST(COALESCE($19::timestamptz, '-infinity'), COALESCE($7::timestamptz, '-infinity'))
      AND l.finished_at < COALESCE($20::timestamptz, 'infinity')
    ORDER BY l.job_id DESC
    LIMIT $2
),
edge AS (
    SELECT GREATEST(
        (SELECT min(v.id) FROM live AS v HAVING count(*) >= $2),
        (SELECT min(d.id) FROM done AS d HAVING count(*) >= $2)
    ) AS id
)
SELECT e.id AS edge, r.*
FROM edge AS e
LEFT JOIN LATERAL (
    SELECT a.id, a.entrypoint, a.status, a.priority, a.attempts, a.created_at, a.execute_after, a.started_at,
           a.finished_at, a.error_type, a.error_message, substring(a.payload FROM 1 FOR 160) AS payload_head
    FROM (SELECT * FROM live UNION ALL SELECT * FROM done) AS a
    WHERE a.id > COALESCE(e.id, 0)
      AND ($5::text IS NULL OR a.entrypoint = $5)
      AND ($6::text IS NULL OR a.status = $6)
      AND ($7::timestamptz IS NULL OR a.created_at >= $7)
      AND ($8::timestamptz IS NULL OR a.created_at < $8)
      AND ($9::text IS NULL OR a.error_text ILIKE $9 OR encode(a.payload, 'escape') ILIKE $10)
      AND ($12::text IS NULL OR a.dedupe_key = $12)
      AND ($13::text IS NULL OR a.headers ->> $13 = $14::text)
    ORDER BY a.id DESC
    LIMIT $11
) AS r ON true
"""

# The job search's filters on live jobs j, shared with bulk actions: $2 entrypoint, $3 / $4 created between,
# $5 LIKE pattern for error text, $6 LIKE pattern for payloads in "escape" encoding, $7 dedupe key, $8 / $9 a
# header's name and value.
LIVE_FILTER = """AND ($2::text IS NULL OR j.entrypoint = $2)
  AND ($3::timestamptz IS NULL OR j.created_at >= $3)
  AND ($4::timestamptz IS NULL OR j.created_at < $4)
  AND ($5::text IS NULL
       OR concat_ws(' ', j.last_error->>'type', j.last_error->>'message', j.last_error->>'traceback') ILIKE $5
       OR encode(j.payload, 'escape') ILIKE $6)
  AND ($7::text IS NULL OR j.dedupe_key = $7)
  AND ($8::text IS NULL OR j.headers ->> $8 = $9::text)"""

# Held, running or suspect jobs: few, each state with its own partial index, so no window is needed. The status is
# written into the text (one statement per state) so that the planner can match the partial index.
_SEARCH_LIVE_STATUS = """
SELECT NULL::bigint AS edge, j.id, j.entrypoint, j.status::text AS status, j.priority, j.attempts, j.created_at,
       j.execute_after, j.picked_at AS started_at, NULL::timestamptz AS finished_at,
       j.last_error->>'type' AS error_type, j.last_error->>'message' AS error_message,
       substring(j.payload FROM 1 FOR 160) AS payload_head
FROM {{jobs}} AS j
WHERE j.status = '{status}' AND j.id < $1
  {live_filter}
ORDER BY j.id DESC
LIMIT $10
"""
SEARCH_LIVE_STATUS = {
    status: _SEARCH_LIVE_STATUS.format(status=status, live_filter=LIVE_FILTER)
    for status in ("failed", "picked", "suspect")
}
