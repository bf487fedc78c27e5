"""The history of finished jobs: counts, run times and queue waits per entrypoint over the last hour, day or
week, and what the running jobs are compared with.

Every statement reads the log by ranges of ``finished_at`` only (its block-range index now, time partitions
later), never the whole table. The last hour is read from the log itself; a day or a week from the rollup of
migration 0007, which the lead worker of each daemon keeps up to date (``pgqd.daemon.worker.log_rollup``).

Durations are counted in classes a quarter of a doubling wide (see the migration), so that percentiles of any
mix of entrypoints, states and time slices come from summed counts: within 9 % of the true value.
"""

from __future__ import annotations

from pgqd.identifiers import Names
from pgqd.sql import render

# A duration in seconds as its class: floor(4 * log2(seconds / 1 ms)), 0 for anything shorter than 1 ms.
_CLASS = "least(32767, floor(5.770780163555854 * ln(greatest({seconds}, 0.001) * 1000)))::smallint"
_RUN_CLASS = _CLASS.format(seconds="date_part('epoch', l.finished_at - l.started_at)")
_WAIT_CLASS = _CLASS.format(seconds="date_part('epoch', l.started_at - COALESCE(l.execute_after, l.created_at))")


def _counted(slice_start: str, extra_filter: str = "") -> str:
    """CTEs ending in `counted`: the log rows that finished in [$1, $2) counted per time slice (``slice_start``,
    an expression of l.finished_at), entrypoint and status, as jobs (measure 0, class 0) and by the class of
    their run time (measure 1) and of their queue wait (measure 2); jobs that never started (a queued job
    canceled) only as jobs. The rows are classified once, then counted in three hash aggregations: grouping
    sets over the log rows themselves were sorted three times, twice as slow."""
    return f"""
classified AS MATERIALIZED (
    SELECT {slice_start} AS slice_start, l.entrypoint, l.status,
           CASE WHEN l.started_at IS NOT NULL THEN {_RUN_CLASS} END AS run_class,
           CASE WHEN l.started_at IS NOT NULL THEN {_WAIT_CLASS} END AS wait_class
    FROM {{log}} AS l
    WHERE l.finished_at >= $1::timestamptz AND l.finished_at < $2::timestamptz{extra_filter}
),
counted AS (
    SELECT c.slice_start, c.entrypoint, c.status, 0::smallint AS measure, 0::smallint AS class, count(*) AS jobs
    FROM classified AS c GROUP BY 1, 2, 3
    UNION ALL
    SELECT c.slice_start, c.entrypoint, c.status, 1::smallint, c.run_class, count(*)
    FROM classified AS c WHERE c.run_class IS NOT NULL GROUP BY 1, 2, 3, 5
    UNION ALL
    SELECT c.slice_start, c.entrypoint, c.status, 2::smallint, c.wait_class, count(*)
    FROM classified AS c WHERE c.wait_class IS NOT NULL GROUP BY 1, 2, 3, 5
)"""


# Adds the log rows that finished in [$1, $2) to their hours' counts in log_rollup. The caller counts each span
# once (pgqd/daemon/worker/log_rollup.py, under an advisory lock, moving log_rollup_state in the same transaction).
# Rows go in key order, so two writers never deadlock.
ROLL_UP = f"""
WITH {_counted("date_trunc('hour', l.finished_at)")}
INSERT INTO {{log_rollup}} AS r (bucket_start, entrypoint, status, measure, class, jobs)
SELECT c.slice_start, c.entrypoint, c.status, c.measure, c.class, c.jobs FROM counted AS c
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (bucket_start, entrypoint, status, measure, class) DO UPDATE SET jobs = r.jobs + excluded.jobs
"""

# The first log row that finished in [$1, $2), by the log's index on finished_at: a pass starts counting there,
# not at the start of an empty stretch (a new install's eight days, a daemon stopped for days).
FIRST_FINISHED = """
SELECT min(l.finished_at) FROM {log} AS l
WHERE l.finished_at >= $1::timestamptz AND l.finished_at < $2::timestamptz
"""

# Where the rollup stands: the log is counted up to this moment (NULL: never counted).
ROLLED_AT = "SELECT s.rolled_at FROM {log_rollup_state} AS s"
MARK_ROLLED = """
INSERT INTO {log_rollup_state} AS s (id, rolled_at) VALUES (true, $1)
ON CONFLICT (id) DO UPDATE SET rolled_at = greatest(s.rolled_at, excluded.rolled_at)
"""

# The rollup keeps a little more than the longest range shown.
PRUNE_ROLLUP = "DELETE FROM {log_rollup} AS r WHERE r.bucket_start < $1::timestamptz"

# Histograms of a time range, in two groupings: per time slice of $3 seconds and status (the charts), and per
# entrypoint and status (the table); `per_slice` tells them apart. $4: one entrypoint or NULL; $5: the final
# statuses wanted or NULL. Each row: a measure (0: jobs, 1: run time, 2: queue wait), a class, a count.

# From the log itself, for [$1, $2): the last hour, by the minute.
HISTOGRAMS_FROM_LOG = f"""
WITH {
    _counted(
        "to_timestamp(floor(date_part('epoch', l.finished_at) / $3) * $3)",
        '''
      AND ($4::text IS NULL OR l.entrypoint = $4)
      AND ($5::text[] IS NULL OR l.status::text = ANY ($5::text[]))''',
    )
}
SELECT GROUPING(c.entrypoint) = 1 AS per_slice, c.slice_start, c.entrypoint, c.status::text AS status, c.measure,
       c.class, sum(c.jobs)::bigint AS jobs
FROM counted AS c
GROUP BY GROUPING SETS ((c.slice_start, c.status, c.measure, c.class), (c.entrypoint, c.status, c.measure, c.class))
"""

# From the rollup, for the hours starting in [$1, $2): a day or a week.
HISTOGRAMS_FROM_ROLLUP = """
SELECT GROUPING(r.entrypoint) = 1 AS per_slice,
       to_timestamp(floor(date_part('epoch', r.bucket_start) / $3) * $3) AS slice_start,
       r.entrypoint, r.status::text AS status, r.measure, r.class, sum(r.jobs)::bigint AS jobs
FROM {log_rollup} AS r
WHERE r.bucket_start >= $1::timestamptz AND r.bucket_start < $2::timestamptz
  AND ($4::text IS NULL OR r.entrypoint = $4)
  AND ($5::text[] IS NULL OR r.status::text = ANY ($5::text[]))
GROUP BY GROUPING SETS ((2, r.status, r.measure, r.class), (r.entrypoint, r.status, r.measure, r.class))
"""

# Running jobs, longest-running first, with the worker process that runs each: the picked rows come from
# jobs_picked_idx (a running job is one of at most processes x concurrency), the workers by primary key.
RUNNING_JOBS = """
SELECT j.id, j.entrypoint, j.priority, j.attempts, j.created_at, j.execute_after, j.picked_at, j.worker_id,
       j.cancel_requested, j.isolated, w.host, w.pid, extract(epoch FROM now() - j.picked_at) AS running_for,
       extract(epoch FROM now() - w.heartbeat_at) AS worker_silent_for
FROM {jobs} AS j
LEFT JOIN {workers} AS w ON w.id = j.worker_id
WHERE j.status = 'picked' AND ($1::text IS NULL OR j.entrypoint = $1)
ORDER BY j.picked_at, j.id
LIMIT $2
"""

# What a run of each entrypoint usually takes: histograms of the run times of successful jobs that finished in
# the last $1 seconds, for the entrypoints $2.
TYPICAL_RUN_TIMES = f"""
SELECT l.entrypoint, {_RUN_CLASS} AS class, count(*) AS jobs
FROM {{log}} AS l
WHERE l.finished_at > now() - make_interval(secs => $1) AND l.status = 'successful'
  AND l.started_at IS NOT NULL AND l.entrypoint = ANY ($2::text[])
GROUP BY 1, 2
"""


class HistoryStatements:
    """The statements above, rendered for one install."""

    def __init__(self, names: Names) -> None:
        self.roll_up = render(ROLL_UP, names)
        self.first_finished = render(FIRST_FINISHED, names)
        self.rolled_at = render(ROLLED_AT, names)
        self.mark_rolled = render(MARK_ROLLED, names)
        self.prune_rollup = render(PRUNE_ROLLUP, names)
        self.histograms_from_log = render(HISTOGRAMS_FROM_LOG, names)
        self.histograms_from_rollup = render(HISTOGRAMS_FROM_ROLLUP, names)
        self.running_jobs = render(RUNNING_JOBS, names)
        self.typical_run_times = render(TYPICAL_RUN_TIMES, names)
