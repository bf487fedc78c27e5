"""The statement behind the queue gauges (``pgqd_queue_depth``, ``pgqd_oldest_job_age_seconds``).

Its cost is bounded whatever the size of the jobs table: it never reads more than ``$1`` index entries per
entrypoint and status, however many jobs wait. A ``GROUP BY`` over the table would read every live job
(0.4 s at a million queued jobs, and growing with them).

- Entrypoints are found by skipping through the leading column of each partial index (``jobs_ready_idx``,
  ``jobs_deferred_idx``, ``jobs_failed_idx``, and ``jobs_waiting_idx`` for jobs waiting for their parents in a
  workflow): one index probe per entrypoint, at most ``$2`` entrypoints.
- Counts stop at ``$1`` per entrypoint and status (a count of ``$1`` means at least that many). Running jobs
  (``picked``) are few by nature (at most the fleet's concurrency), and so are suspects (jobs present in two
  worker deaths, read from their own partial index): each is counted up to ``$1`` in all.
- The oldest job that could run now is the oldest of the heads of each priority of the ready index (one probe
  per distinct priority, at most ``$2`` of them per entrypoint) and the due head of the deferred index.
"""

from __future__ import annotations

QUEUE_GAUGES = """
WITH RECURSIVE
ready_entrypoints AS (
    SELECT min(j.entrypoint) AS entrypoint, 1 AS n FROM {jobs} AS j WHERE j.status = 'queued'
    UNION ALL
    SELECT (SELECT min(j.entrypoint) FROM {jobs} AS j WHERE j.status = 'queued' AND j.entrypoint > e.entrypoint),
           e.n + 1
    FROM ready_entrypoints AS e WHERE e.entrypoint IS NOT NULL AND e.n < $2
),
ready_priorities AS (
    SELECT e.entrypoint,
           (SELECT max(j.priority) FROM {jobs} AS j WHERE j.status = 'queued' AND j.entrypoint = e.entrypoint)
               AS priority,
           1 AS n
    FROM ready_entrypoints AS e WHERE e.entrypoint IS NOT NULL
    UNION ALL
    SELECT p.entrypoint,
           (SELECT max(j.priority) FROM {jobs} AS j
            WHERE j.status = 'queued' AND j.entrypoint = p.entrypoint AND j.priority < p.priority),
           p.n + 1
    FROM ready_priorities AS p WHERE p.priority IS NOT NULL AND p.n < $2
),
deferred_entrypoints AS (
    SELECT min(j.entrypoint) AS entrypoint, 1 AS n FROM {jobs} AS j WHERE j.status = 'deferred'
    UNION ALL
    SELECT (SELECT min(j.entrypoint) FROM {jobs} AS j WHERE j.status = 'deferred' AND j.entrypoint > e.entrypoint),
           e.n + 1
    FROM deferred_entrypoints AS e WHERE e.entrypoint IS NOT NULL AND e.n < $2
),
failed_entrypoints AS (
    SELECT min(j.entrypoint) AS entrypoint, 1 AS n FROM {jobs} AS j WHERE j.status = 'failed'
    UNION ALL
    SELECT (SELECT min(j.entrypoint) FROM {jobs} AS j WHERE j.status = 'failed' AND j.entrypoint > e.entrypoint),
           e.n + 1
    FROM failed_entrypoints AS e WHERE e.entrypoint IS NOT NULL AND e.n < $2
),
waiting_entrypoints AS (
    SELECT min(j.entrypoint) AS entrypoint, 1 AS n FROM {jobs} AS j WHERE j.status = 'waiting'
    UNION ALL
    SELECT (SELECT min(j.entrypoint) FROM {jobs} AS j WHERE j.status = 'waiting' AND j.entrypoint > e.entrypoint),
           e.n + 1
    FROM waiting_entrypoints AS e WHERE e.entrypoint IS NOT NULL AND e.n < $2
),
ready_heads AS (
    SELECT p.entrypoint,
           min((SELECT j.execute_after FROM {jobs} AS j
                WHERE j.status = 'queued' AND j.entrypoint = p.entrypoint AND j.priority = p.priority
                ORDER BY j.priority DESC, j.id LIMIT 1)) AS oldest
    FROM ready_priorities AS p WHERE p.priority IS NOT NULL
    GROUP BY p.entrypoint
)
SELECT e.entrypoint, 'queued' AS status,
       (SELECT count(*) FROM (SELECT FROM {jobs} AS j WHERE j.status = 'queued' AND j.entrypoint = e.entrypoint
                              LIMIT $1) AS c) AS jobs,
       extract(epoch FROM now() - (SELECT h.oldest FROM ready_heads AS h WHERE h.entrypoint = e.entrypoint))::float8
           AS oldest_age
FROM ready_entrypoints AS e WHERE e.entrypoint IS NOT NULL
UNION ALL
SELECT e.entrypoint, 'deferred',
       (SELECT count(*) FROM (SELECT FROM {jobs} AS j WHERE j.status = 'deferred' AND j.entrypoint = e.entrypoint
                              LIMIT $1) AS c),
       extract(epoch FROM now() - (SELECT min(j.execute_after) FROM {jobs} AS j
                                   WHERE j.status = 'deferred' AND j.entrypoint = e.entrypoint
                                     AND j.execute_after <= now()))::float8
FROM deferred_entrypoints AS e WHERE e.entrypoint IS NOT NULL
UNION ALL
SELECT e.entrypoint, 'failed',
       (SELECT count(*) FROM (SELECT FROM {jobs} AS j WHERE j.status = 'failed' AND j.entrypoint = e.entrypoint
                              LIMIT $1) AS c),
       NULL
FROM failed_entrypoints AS e WHERE e.entrypoint IS NOT NULL
UNION ALL
SELECT e.entrypoint, 'waiting',
       (SELECT count(*) FROM (SELECT FROM {jobs} AS j WHERE j.status = 'waiting' AND j.entrypoint = e.entrypoint
                              LIMIT $1) AS c),
       NULL
FROM waiting_entrypoints AS e WHERE e.entrypoint IS NOT NULL
UNION ALL
SELECT r.entrypoint, 'picked', count(*), NULL
FROM (SELECT j.entrypoint FROM {jobs} AS j WHERE j.status = 'picked' LIMIT $1) AS r
GROUP BY r.entrypoint
UNION ALL
SELECT s.entrypoint, 'suspect', count(*), NULL
FROM (SELECT j.entrypoint FROM {jobs} AS j WHERE j.status = 'suspect' LIMIT $1) AS s
GROUP BY s.entrypoint
"""
