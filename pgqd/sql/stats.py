"""The read side's statements: what operators see in ``pgqd dashboard``, the web UI, the MCP tools and the
queue gauges of ``/metrics``.

Each must stay fast with a million live jobs and a million log rows, so none reads the jobs table in full: they
walk the partial indexes of migration 0001 (``jobs_ready_idx``, ``jobs_deferred_idx``, ``jobs_failed_idx``,
``jobs_picked_idx``), 0003's ``jobs_suspect_idx``, 0012's ``jobs_waiting_idx``, and in the log only the day
partitions of the time range they ask for (migration 0011), each through its B-tree on ``finished_at``. The
range is written as a bound on ``finished_at`` from ``now()`` or a parameter, which PostgreSQL prunes partitions
with when the query starts.
Render them with ``StatsStatements``.
"""

from __future__ import annotations

from pgqd.identifiers import Names
from pgqd.sql import render

# Distinct entrypoints of one live status, one index probe each (a "skip scan" of the partial index): a handful
# of probes instead of a pass over every queued row.
_DISTINCT_ENTRYPOINTS = """
{name} AS (
    (SELECT j.entrypoint FROM {{jobs}} AS j WHERE j.status = '{status}' ORDER BY j.entrypoint LIMIT 1)
    UNION ALL
    SELECT (SELECT j.entrypoint FROM {{jobs}} AS j
            WHERE j.status = '{status}' AND j.entrypoint > e.entrypoint ORDER BY j.entrypoint LIMIT 1)
    FROM {name} AS e WHERE e.entrypoint IS NOT NULL
)"""

# Jobs of one entrypoint and status, counted on the partial index; $1 caps the count (NULL: exact), as an exact
# count of a million queued jobs takes ~100 ms where a capped one takes a millisecond.
_COUNT = """(SELECT count(*) FROM (SELECT 1 FROM {{jobs}} AS j
                         WHERE j.entrypoint = n.entrypoint AND j.status = '{status}' LIMIT $1) AS c)"""

# Whether an entrypoint is paused: its own row decides, else the '*' row (pause --all), else it runs.
PAUSED_EXPRESSION = """COALESCE(
    (SELECT p.paused FROM {entrypoint_pauses} AS p WHERE p.entrypoint = n.entrypoint),
    (SELECT p.paused FROM {entrypoint_pauses} AS p WHERE p.entrypoint = '*'),
    false)"""

# One row per entrypoint that has live jobs, is served by a running worker, or has a pause row.
#
# Oldest eligible age: queued jobs wait in priority-then-FIFO order, so the longest-waiting queued job is at the
# head of its priority level; the heads are one index probe per priority level (a recursive walk down
# jobs_ready_idx). A job retried at once keeps its old id but a new due time, so it never makes the figure
# older than the truth. Deferred jobs that are due are the first entries of jobs_deferred_idx.
QUEUES = (
    "WITH RECURSIVE"
    + ",".join(
        _DISTINCT_ENTRYPOINTS.format(name=name, status=status)
        for name, status in (
            ("ready", "queued"),
            ("later", "deferred"),
            ("held", "failed"),
            ("suspects", "suspect"),
            ("waiting", "waiting"),
        )
    )
    + """,
running AS (
    SELECT j.entrypoint, count(*) AS jobs FROM {jobs} AS j WHERE j.status = 'picked' GROUP BY j.entrypoint
),
names AS (
    SELECT e.entrypoint FROM ready AS e WHERE e.entrypoint IS NOT NULL
    UNION SELECT e.entrypoint FROM later AS e WHERE e.entrypoint IS NOT NULL
    UNION SELECT e.entrypoint FROM held AS e WHERE e.entrypoint IS NOT NULL
    UNION SELECT e.entrypoint FROM suspects AS e WHERE e.entrypoint IS NOT NULL
    UNION SELECT e.entrypoint FROM waiting AS e WHERE e.entrypoint IS NOT NULL
    UNION SELECT r.entrypoint FROM running AS r
    UNION SELECT unnest(w.entrypoints) FROM {workers} AS w
    UNION SELECT p.entrypoint FROM {entrypoint_pauses} AS p WHERE p.entrypoint <> '*'
)
SELECT n.entrypoint,
       """
    + _COUNT.format(status="queued")
    + """ AS queued,
       """
    + _COUNT.format(status="deferred")
    + """ AS deferred,
       COALESCE(r.jobs, 0) AS running,
       """
    + _COUNT.format(status="failed")
    + """ AS held,
       """
    + _COUNT.format(status="suspect")
    + """ AS suspects,
       """
    + _COUNT.format(status="waiting")
    + """ AS waiting,
       extract(epoch FROM now() - h.oldest) AS oldest_queued_age,
       extract(epoch FROM now() - (
           SELECT j.execute_after FROM {jobs} AS j
           WHERE j.entrypoint = n.entrypoint AND j.status = 'deferred' AND j.execute_after <= now()
           ORDER BY j.execute_after LIMIT 1)) AS oldest_due_age,
       """
    + PAUSED_EXPRESSION
    + """ AS paused
FROM names AS n
LEFT JOIN running AS r ON r.entrypoint = n.entrypoint
LEFT JOIN LATERAL (
    WITH RECURSIVE heads AS (
        (SELECT j.priority, j.execute_after FROM {jobs} AS j
         WHERE j.entrypoint = n.entrypoint AND j.status = 'queued'
         ORDER BY j.priority DESC, j.id LIMIT 1)
        UNION ALL
        SELECT x.priority, x.execute_after
        FROM heads AS hd,
        LATERAL (SELECT j.priority, j.execute_after FROM {jobs} AS j
                 WHERE j.entrypoint = n.entrypoint AND j.status = 'queued' AND j.priority < hd.priority
                 ORDER BY j.priority DESC, j.id LIMIT 1) AS x
    )
    SELECT min(hd.execute_after) AS oldest FROM heads AS hd
) AS h ON true
ORDER BY n.entrypoint
"""
)

# The pause rows as stored: '*' is the row of ``pause --all``; paused = false marks an entrypoint resumed while
# every other one stays paused.
PAUSES = """
SELECT p.entrypoint, p.paused, p.changed_at FROM {entrypoint_pauses} AS p ORDER BY p.entrypoint
"""

# Reads the last five minutes' rows of today's partition (yesterday's too, just after midnight UTC).
THROUGHPUT = """
SELECT l.entrypoint, l.status::text AS status,
       count(*) FILTER (WHERE l.finished_at > now() - interval '1 minute') AS last_1m,
       count(*) AS last_5m
FROM {log} AS l
WHERE l.finished_at > now() - interval '5 minutes'
GROUP BY 1, 2
ORDER BY 1, 2
"""

# Finished jobs per entrypoint in time buckets of $2 seconds over the last $1 seconds (the overview chart).
# The minutes the lead worker has counted come from log_minutes (migration 0007): a row per minute and
# entrypoint, so an hour costs 60 rows per entrypoint however many jobs finished in it. Only the rows since the
# last minute counted (two or three minutes of them), and any older than the first, are read from the log,
# through the B-tree on finished_at of the partitions they lie in. Buckets that are not whole minutes are
# counted from the log alone. The bounds come from InitPlans, which PostgreSQL prunes partitions with.
_LOG_ROWS_COUNTED = """
    SELECT l.finished_at, l.entrypoint, (l.status = 'successful')::integer,
           (l.status IN ('exception', 'timeout'))::integer,
           (l.status NOT IN ('successful', 'exception', 'timeout'))::integer
    FROM {log} AS l
"""
THROUGHPUT_SERIES = (
    """
WITH bounds AS MATERIALIZED (
    -- With whole-minute buckets, the window starts at the first whole minute in it.
    SELECT CASE WHEN w.whole THEN date_trunc('minute', now() - make_interval(secs => $1) + interval '59.999999 s')
                ELSE now() - make_interval(secs => $1) END AS start,
           r.rolled_from, r.rolled_until
    FROM (SELECT mod($2::numeric, 60) = 0 AS whole) AS w
    LEFT JOIN {log_minutes_rolled} AS r ON w.whole
),
finished AS (
    SELECT m.minute AS at, m.entrypoint, m.succeeded, m.failed, m.other
    FROM {log_minutes} AS m, bounds AS b
    WHERE m.minute >= b.rolled_from AND m.minute < b.rolled_until AND m.minute >= b.start
      AND ($3::text IS NULL OR m.entrypoint = $3)
    UNION ALL
"""
    + _LOG_ROWS_COUNTED
    + """    WHERE l.finished_at >= GREATEST((SELECT b.start FROM bounds AS b),
                                    (SELECT b.rolled_until FROM bounds AS b))
      AND ($3::text IS NULL OR l.entrypoint = $3)
    UNION ALL
"""
    + _LOG_ROWS_COUNTED
    + """    WHERE l.finished_at >= (SELECT b.start FROM bounds AS b)
      AND l.finished_at < (SELECT b.rolled_from FROM bounds AS b)
      AND ($3::text IS NULL OR l.entrypoint = $3)
)
SELECT to_timestamp(floor(extract(epoch FROM f.at) / $2) * $2) AS bucket_start, f.entrypoint,
       sum(f.succeeded)::bigint AS succeeded, sum(f.failed)::bigint AS failed, sum(f.other)::bigint AS other
FROM finished AS f
GROUP BY 1, 2
ORDER BY 1, 2
"""
)

# Held jobs (status failed, waiting for an operator), oldest first, in pages: $2 is the last id of the page
# before. With an entrypoint, jobs_failed_idx gives them in order; without, the held rows are read from the
# same index and sorted, never the whole table.
HELD_JOBS = """
SELECT j.id, j.entrypoint, j.priority, j.attempts, j.created_at, j.execute_after, j.dedupe_key,
       j.last_error->>'type' AS error_type, j.last_error->>'message' AS error_message
FROM {jobs} AS j
WHERE j.status = 'failed' AND ($1::text IS NULL OR j.entrypoint = $1) AND ($2::bigint IS NULL OR j.id > $2)
ORDER BY j.id
LIMIT $3
"""

# Runs that ended in an exception or a timeout in the last $1 seconds, newest first.
RECENT_FAILURES = """
SELECT l.job_id AS id, l.entrypoint, l.status::text AS status, l.attempts, l.created_at, l.started_at,
       l.finished_at, l.error_type, l.error_message
FROM {log} AS l
WHERE l.finished_at > now() - make_interval(secs => $1) AND l.status IN ('exception', 'timeout')
  AND ($2::text IS NULL OR l.entrypoint = $2)
ORDER BY l.finished_at DESC, l.job_id DESC
LIMIT $3
"""

# One job, live or finished, by primary key. Finished jobs keep no headers, and a payload only when their entrypoint
# keeps payloads (keep_payload).
JOB_DETAIL = """
SELECT j.id, j.entrypoint, j.status::text AS status, j.priority, j.attempts, j.payload, j.headers::text AS headers,
       j.dedupe_key, j.created_at, j.execute_after, j.picked_at AS started_at, NULL::timestamptz AS finished_at,
       j.worker_id, j.cancel_requested, j.lost_runs, j.last_error->>'type' AS error_type,
       j.last_error->>'message' AS error_message, j.last_error->>'traceback' AS error_traceback,
       NULL::text AS result, j.errors::text AS errors
FROM {jobs} AS j WHERE j.id = $1
UNION ALL
SELECT l.job_id, l.entrypoint, l.status::text, l.priority, l.attempts, l.payload, NULL::text, l.dedupe_key,
       l.created_at, NULL::timestamptz, l.started_at, l.finished_at, l.worker_id, false, 0, l.error_type,
       l.error_message, l.error_traceback, l.result::text, l.errors::text
FROM {log} AS l WHERE l.job_id = $1
LIMIT 1
"""

# The running count per worker reads jobs_picked_idx, keyed by worker.
WORKERS = """
SELECT w.id, w.host, w.pid, w.entrypoints, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at) AS silent_for,
       (SELECT count(*) FROM {jobs} AS j WHERE j.worker_id = w.id AND j.status = 'picked') AS running
FROM {workers} AS w
ORDER BY w.host, w.pid
"""

LIST_LIVE_JOBS = """
SELECT j.id, j.entrypoint, j.status::text AS status, j.priority, j.attempts, j.created_at, j.execute_after,
       j.picked_at, j.worker_id, j.dedupe_key, j.last_error->>'type' AS error_type,
       j.last_error->>'message' AS error_message
FROM {jobs} AS j
WHERE ($1::text IS NULL OR j.entrypoint = $1) AND ($2::text IS NULL OR j.status::text = $2)
ORDER BY j.id
LIMIT $3
"""

LIST_FINISHED_JOBS = """
SELECT l.job_id AS id, l.entrypoint, l.status::text AS status, l.priority, l.attempts, l.created_at,
       l.started_at, l.finished_at, l.worker_id, l.dedupe_key, l.error_type, l.error_message
FROM {log} AS l
WHERE ($1::text IS NULL OR l.entrypoint = $1) AND l.status::text = $2
-- The partitions are read newest first, each backwards along its B-tree on finished_at, until $3 rows match.
ORDER BY l.finished_at DESC
LIMIT $3
"""

HELD_JOB_IDS = """
SELECT array_agg(j.id ORDER BY j.id) FROM {jobs} AS j
WHERE j.status = 'failed' AND ($1::text IS NULL OR j.entrypoint = $1)
"""


# These queries are planned with high cost estimates (a count per entrypoint of unknown size), which would make
# PostgreSQL compile them to machine code first: half a second, where running takes ~10 ms. Run before each.
WITHOUT_JIT = "SET LOCAL jit = off"


class StatsStatements:
    """The statements above, rendered for one install."""

    def __init__(self, names: Names) -> None:
        self.queues = render(QUEUES, names)
        self.pauses = render(PAUSES, names)
        self.throughput = render(THROUGHPUT, names)
        self.throughput_series = render(THROUGHPUT_SERIES, names)
        self.held_jobs = render(HELD_JOBS, names)
        self.recent_failures = render(RECENT_FAILURES, names)
        self.job_detail = render(JOB_DETAIL, names)
        self.workers = render(WORKERS, names)
        self.list_live_jobs = render(LIST_LIVE_JOBS, names)
        self.list_finished_jobs = render(LIST_FINISHED_JOBS, names)
        self.held_job_ids = render(HELD_JOB_IDS, names)
