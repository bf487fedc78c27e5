"""Every statement pgqd runs outside migrations, each named for what it does.

Templates use ``{jobs}``-style placeholders (see ``Names.template_values``); values always travel as bind
parameters. Render them once per install with ``Statements(names)``.
"""

from __future__ import annotations

import functools

from pgqd.identifiers import Names
from pgqd.models import DJANGO_ENTRYPOINT_PREFIX
from pgqd.sql import notices, render

# Ids are drawn from the identity sequence up front (in a materialised CTE) so that each input row keeps its id
# whatever order the insert runs in; that is how ids come back in input order. One NOTIFY per statement.
_JOB_ROWS = """unnest($1::text[], $2::bytea[], $3::text[], $4::integer[], $5::double precision[],
                $6::timestamptz[], $7::text[]) WITH ORDINALITY"""
_ENQUEUE_INPUT = (
    """
WITH input AS MATERIALIZED (
    SELECT nextval('{jobs_id_seq}') AS id, u.*
    FROM """
    + _JOB_ROWS
    + """
         AS u(entrypoint, payload, headers, priority, delay, at, dedupe_key, ord)
),
timed AS (
    SELECT i.*, COALESCE(i.at, now() + make_interval(secs => i.delay)) AS due FROM input AS i
),
inserted AS (
    INSERT INTO {jobs} AS j (id, entrypoint, payload, headers, priority, status, execute_after, dedupe_key)
    SELECT t.id, t.entrypoint, t.payload, t.headers::jsonb, t.priority,
           (CASE WHEN t.due > now() THEN 'deferred' ELSE 'queued' END)::{job_status}, t.due, t.dedupe_key
    FROM timed AS t
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status <> 'failed'
"""
)

# The notice of an enqueue is built by the producer from what it sends (notices.enqueue_notice), so the statement
# aggregates nothing over its rows.
_ENQUEUE_NOTIFY = f"notified AS (SELECT {notices.given('$8', '$9')} AS sent)"

# on_conflict="raise": a conflicting key fails the whole statement, so nothing of the batch is kept.
ENQUEUE_OR_RAISE = (
    _ENQUEUE_INPUT
    + """    DO NOTHING
    RETURNING j.id
),
conflicts AS (
    SELECT {raise_dedupe_conflict}(array_agg(i.dedupe_key)) AS failed
    FROM input AS i
    WHERE NOT EXISTS (SELECT 1 FROM inserted AS n WHERE n.id = i.id)
    HAVING count(*) > 0
),
"""
    + _ENQUEUE_NOTIFY
    + """
SELECT i.id FROM input AS i
WHERE NOT EXISTS (SELECT 1 FROM conflicts) AND EXISTS (SELECT 1 FROM notified)
ORDER BY i.ord
"""
)

ENQUEUE_OR_SKIP = (
    _ENQUEUE_INPUT
    + """    DO NOTHING
    RETURNING j.id
),
"""
    + _ENQUEUE_NOTIFY
    + """
SELECT n.id FROM input AS i LEFT JOIN inserted AS n ON n.id = i.id
WHERE EXISTS (SELECT 1 FROM notified)
ORDER BY i.ord
"""
)

# A conflicting row returns the existing job's id, matched back to its input row by the dedupe key.
ENQUEUE_OR_RAISE_PRIORITY = (
    _ENQUEUE_INPUT
    + """    DO UPDATE SET priority = GREATEST(j.priority, EXCLUDED.priority)
    RETURNING j.id, j.dedupe_key
),
"""
    + _ENQUEUE_NOTIFY
    + """
SELECT COALESCE(same.id, existing.id) AS id
FROM input AS i
LEFT JOIN inserted AS same ON same.id = i.id
LEFT JOIN inserted AS existing ON existing.dedupe_key = i.dedupe_key AND existing.id <> i.id
WHERE EXISTS (SELECT 1 FROM notified)
ORDER BY i.ord
"""
)

# The same, in the statements below that take the channel and the notice as $4 and $5.
_NOTIFIED = f"notified AS (SELECT {notices.given('$4', '$5')} AS sent)"

# One job, the most common call, goes as single values: every array type is one more look-up asyncpg makes on
# each new connection before its first statement that uses it (12 ms for the three of ENQUEUE_PLAIN), which
# an application pays on the first enqueue of every pooled connection. The plain job needs none of the above.
ENQUEUE_ONE = """
WITH inserted AS (
    INSERT INTO {jobs} (entrypoint, payload, priority) VALUES ($1::text, $2::bytea, $3::integer) RETURNING id
),
{notified}
SELECT n.id FROM inserted AS n, notified
""".replace("{notified}", _NOTIFIED)

_ONE_JOB_ROW = """(VALUES ($1::text, $2::bytea, $3::text, $4::integer, $5::double precision,
                $6::timestamptz, $7::text, 1::bigint))"""


def _one_job(statement: str) -> str:
    """One of the ENQUEUE_OR_* statements taking the values of a single job rather than arrays of them."""
    if _JOB_ROWS not in statement:
        raise ValueError("not an enqueue statement built on _ENQUEUE_INPUT")
    return statement.replace(_JOB_ROWS, _ONE_JOB_ROW)


# The common bulk case, jobs that are due now with no dedupe key or headers: nothing to decide per row (about twice
# the rows per second of the general statements above). The ids come back as one array, which decodes faster
# than a row per job.
ENQUEUE_PLAIN = """
WITH input AS MATERIALIZED (
    SELECT nextval('{jobs_id_seq}') AS id, u.*
    FROM unnest($1::text[], $2::bytea[], $3::integer[]) WITH ORDINALITY AS u(entrypoint, payload, priority, ord)
),
inserted AS (
    INSERT INTO {jobs} (id, entrypoint, payload, priority)
    SELECT i.id, i.entrypoint, i.payload, i.priority FROM input AS i
),
{notified}
SELECT array_agg(i.id ORDER BY i.ord) FROM input AS i, notified
""".replace("{notified}", _NOTIFIED)

# The same for a batch of one entrypoint and one priority (most batches), which go as single values: each array
# parameter costs the driver ~0.3 ms per 1,000 elements to encode, as much as the whole statement takes to plan
# and sort.
ENQUEUE_UNIFORM = """
WITH input AS MATERIALIZED (
    SELECT nextval('{jobs_id_seq}') AS id, u.payload, u.ord
    FROM unnest($2::bytea[]) WITH ORDINALITY AS u(payload, ord)
),
inserted AS (
    INSERT INTO {jobs} (id, entrypoint, payload, priority)
    SELECT i.id, $1::text, i.payload, $3::integer FROM input AS i
),
{notified}
SELECT array_agg(i.id ORDER BY i.ord) FROM input AS i, notified
""".replace("{notified}", _NOTIFIED)

# $3 jobs of one entrypoint and one priority without payloads are all alike, so no id needs matching to an input
# row: no array goes either way but the ids, and the server neither keeps the input aside nor sorts it by
# position (together ~10 % of the statement; the driver alone takes ~0.4 ms to encode 1,000 NULL payloads).
ENQUEUE_BARE = """
WITH inserted AS (
    INSERT INTO {jobs} (entrypoint, priority)
    SELECT $1::text, $2::integer FROM generate_series(1, $3::integer)
    RETURNING id
),
{notified}
SELECT array_agg(i.id ORDER BY i.id) FROM inserted AS i, notified
""".replace("{notified}", _NOTIFIED)

# The claim itself is the claim_jobs function (migration 0016 runs it in small statements, the claim proper the
# same with limits or without; 0014 says why it is race-free and how limits are read; 0017 lets it read the ready
# jobs from where the worker's last claim started; 0018 says which limits are reached; 0019 has a big claim from
# the starts of several entrypoints lock only each one's share of the batch). Its contract, as
# PostgresBackend.claim reads it: every row is either a claimed job (hint IS NULL; the columns up to
# cancel_requested are ClaimedJob's fields, in its order and under its names, which tests/test_claim_contract.py
# checks) or a hint about entrypoint (hint = 'throttled' or 'due' with wake_in seconds, 'closed', or 'suspects').
# A 'closed' row's cancel_requested says whether that entrypoint's concurrency limit is reached.
# $10: report 'closed' entrypoints (a claim that is not isolated), which the worker leaves out of its next claims
# (pgqd/worker/limit_gates.py). $11, $12: per entrypoint, the priority and id to start the read of its ready jobs
# from (NULL arrays: a whole read), as pgqd/backend/ready_scan.py chooses them.
# The claim commits without waiting for its WAL to reach disk: should the server crash before it does, its jobs
# are queued again while they may still run (docs/reliability.md says what follows; at-least-once allows a second
# run). The outcome commit that follows waits for the WAL up to and including the claim, so every recorded
# outcome sits on a durable claim. This saves a disk flush per claim: 1 process at batch 10 went from 12.9k to
# 15.2k jobs/s.
# The times go out as seconds since the epoch: the driver decodes a float in a tenth of the time of a timestamp.
CLAIM_JOBS = """
SELECT c.id, c.entrypoint, c.payload, c.headers, c.priority, c.attempts,
       date_part('epoch', c.created_at) AS created_s, date_part('epoch', c.execute_after) AS execute_after_s,
       date_part('epoch', c.picked_at) AS picked_s, c.cancel_requested, c.wake_in, c.hint
FROM set_config('synchronous_commit', 'off', true) AS s,
    {claim_jobs}($1::bigint, $2::integer, $3::text[], $4::integer[], $5::double precision[], $6::double precision[],
                 $7::boolean, NULL::integer[], $8::boolean[], $9::integer[], $10::boolean, $11::integer[],
                 $12::bigint[]) AS c
"""

# The children of jobs that just ended, settled in the same transaction (migration 0012's settle_children),
# only when one of them has children: for a flush of ordinary jobs this reads the ended rows and nothing else.
_SETTLED = """settled AS (
    SELECT {{settle_children}}(array_agg(r.id ORDER BY r.id), array_agg({status} ORDER BY r.id),
                              array_agg({result} ORDER BY r.id), NULL, {channel}::text) AS released
    FROM {ended} AS r WHERE r.has_dependents
    HAVING count(*) > 0
)"""

# One round trip per flush: finished jobs move from jobs to the log, retried/held/released ones are updated in
# place. Every change requires that the worker still owns the job (worker_id and status 'picked'): if it was
# presumed dead and its jobs were rescued, its late outcomes are dropped and the rescued run decides, so a
# job's end settles its children (workflows, migration 0012) once. $17: results of entrypoints that do not
# store them, kept only for jobs that have children.
# The payload goes to the log only for the entrypoints in $16 (keep_payload): the others' payloads are not
# read, so a large one is not even fetched from its TOAST table.
# Outside the worker's outcome write, which knows the entrypoints that keep payloads, a job logged by a cancel or
# a give-up keeps its payload when it is a Django task (entrypoint DJANGO_ENTRYPOINT_PREFIX + queue): its task
# result names the task, which only the payload holds.
_KEPT_PAYLOAD = f"CASE WHEN j.entrypoint LIKE '{DJANGO_ENTRYPOINT_PREFIX}%' THEN j.payload END"

# The hand-over (HandOver in pgqd/models.py): the slots that this write frees of concurrency-limited entrypoints
# ($18, with $19 slots wanted and $20 their limits) pass to those entrypoints' next jobs, claimed here for the
# same worker. Every snapshot sees either the ended job or its successor as picked, never both: the running count
# the claims read under the limit row's lock never grows, so this takes no lock on it, and no claim with limits
# and no slot notice follow the end of each limited job (docs/architecture.md, "Slots handed from job to job").
# It takes no more than the limit allows over the jobs running now, so a limit lowered since does not stay
# exceeded. ``handed`` is materialized: inlined, its counts ran again for each LIMIT that reads ``n`` (a write that
# hands over took 670 µs against 621, statement_costs at 1 process, batch 10).
_HAND_OVER = """
handed AS MATERIALIZED (
    SELECT h.ep, LEAST(h.wanted, x.ended, h.conc - x.running + x.ended) AS n
    FROM unnest($18::text[], $19::integer[], $20::integer[]) AS h(ep, wanted, conc),
    LATERAL (
        SELECT (SELECT count(*) FROM ended AS e WHERE e.entrypoint = h.ep)::integer AS ended,
               (SELECT count(*) FROM {jobs} AS j WHERE j.status = 'picked' AND j.entrypoint = h.ep)::integer
                   AS running
    ) AS x
    WHERE NOT COALESCE((SELECT p.paused FROM {entrypoint_pauses} AS p WHERE p.entrypoint = h.ep),
                       (SELECT p.paused FROM {entrypoint_pauses} AS p WHERE p.entrypoint = '*'),
                       false)
),
next_jobs AS (
    SELECT c.tid
    FROM handed AS h,
    LATERAL (
        SELECT q.tid, q.id, q.priority FROM (
            SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
            WHERE j.entrypoint = h.ep AND j.status = 'queued'
            ORDER BY j.priority DESC, j.id
            LIMIT h.n
            FOR UPDATE SKIP LOCKED
        ) AS q
        UNION ALL
        SELECT d.tid, d.id, d.priority FROM (
            SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
            WHERE j.entrypoint = h.ep AND j.status = 'deferred' AND j.execute_after <= now()
            ORDER BY j.execute_after
            LIMIT h.n
            FOR UPDATE SKIP LOCKED
        ) AS d
        ORDER BY 3 DESC, 2
        LIMIT h.n
    ) AS c
    WHERE h.n > 0
),
successors AS (
    -- As the claim takes a job (migration 0017), and by ctid for the same reason.
    UPDATE {jobs} AS j
    SET status = 'picked', picked_at = now(), worker_id = $1::bigint, attempts = j.attempts + 1, isolated = false,
        max_deaths = NULL, hold_failures = false
    WHERE j.ctid = ANY (ARRAY(SELECT n.tid FROM next_jobs AS n))
    RETURNING j.id, j.entrypoint, j.payload, j.headers::text AS headers, j.priority, j.attempts,
              date_part('epoch', j.created_at) AS created_s, date_part('epoch', j.execute_after) AS execute_after_s,
              date_part('epoch', j.picked_at) AS picked_s, j.cancel_requested
)"""

_APPLIED = (
    """
WITH done AS (
    -- A NULL status is 'successful', the status of nearly every job: sent as NULLs, or as one NULL array when
    -- the whole flush succeeded, which unnest pads with NULLs (the driver encodes no text per job).
    SELECT d.id, COALESCE(d.status, 'successful') AS status, d.started_after, d.duration, d.error_type,
           d.error_message, d.error_traceback, d.result, d.handed
    FROM unnest($2::bigint[], $3::text[], $4::double precision[], $5::double precision[],
                $6::text[], $7::text[], $8::text[], $9::text[], $17::text[])
        AS d(id, status, started_after, duration, error_type, error_message, error_traceback, result, handed)
),
removed AS (
    DELETE FROM {jobs} AS j USING done AS d
    WHERE j.id = d.id AND j.worker_id = $1::bigint AND j.status = 'picked'
    RETURNING j.id, j.entrypoint, j.priority, j.attempts, j.dedupe_key, j.created_at, j.execute_after, j.picked_at,
              j.notify_finished, j.errors, j.has_dependents, d.status, d.started_after, d.duration, d.error_type,
              d.error_message, d.error_traceback, COALESCE(d.result, CASE WHEN j.has_dependents THEN d.handed END)
              AS result, CASE WHEN j.entrypoint = ANY ($16::text[]) THEN j.payload END AS payload
),
logged AS (
    INSERT INTO {log} (job_id, entrypoint, priority, status, attempts, dedupe_key, worker_id, created_at,
                       execute_after, started_at, finished_at, error_type, error_message, error_traceback, result,
                       errors, payload)
    SELECT r.id, r.entrypoint, r.priority, r.status::{final_status}, r.attempts, r.dedupe_key, $1::bigint, r.created_at,
           r.execute_after,
           r.picked_at + make_interval(secs => r.started_after),
           r.picked_at + make_interval(secs => r.started_after + r.duration),
           r.error_type, r.error_message, r.error_traceback, r.result::jsonb, r.errors, r.payload
    FROM removed AS r
),
changed AS (
    UPDATE {jobs} AS j
    SET status = (CASE
                     WHEN c.kind = 'hold' THEN 'failed'
                     WHEN c.kind = 'retry' AND c.delay > 0 THEN 'deferred'
                     -- A suspect released unfinished (shutdown) has not shown it is harmless.
                     WHEN c.kind = 'release' AND j.isolated THEN 'suspect'
                     ELSE 'queued'
                 END)::{job_status},
        isolated = false,
        execute_after = CASE WHEN c.kind = 'retry' THEN now() + make_interval(secs => c.delay)
                             ELSE j.execute_after END,
        attempts = CASE WHEN c.kind = 'release' THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
        last_error = COALESCE(c.error::jsonb, j.last_error),
        -- The error history (migration 0004): this attempt's error appended, the newest 20 kept.
        errors = CASE WHEN c.error IS NULL THEN j.errors ELSE jsonb_path_query_array(
                     COALESCE(j.errors, '[]'::jsonb) || jsonb_build_array(
                         c.error::jsonb || jsonb_build_object('attempt', j.attempts, 'at', now())),
                     '$[last - 19 to last]') END,
        worker_id = NULL,
        picked_at = NULL
    FROM unnest($10::bigint[], $11::text[], $12::double precision[], $13::text[]) AS c(id, kind, delay, error)
    -- Tested first, on its own: with nothing requeued (most flushes) the worker's running jobs are not read.
    WHERE cardinality($10::bigint[]) > 0 AND j.id = c.id AND j.worker_id = $1::bigint AND j.status = 'picked'
    RETURNING j.id, j.entrypoint, j.status, j.notify_finished, c.delay
),
"""
    + _SETTLED.format(ended="removed", status="r.status", result="r.result", channel="$14")
    + ","
)
_FINISHED_NOTICE = """
finished_notice AS (
    SELECT {notify_finished} AS sent
    FROM (SELECT r.id FROM removed AS r WHERE r.notify_finished
          UNION ALL
          SELECT c.id FROM changed AS c WHERE c.notify_finished AND c.status = 'failed') AS f
    HAVING count(*) > 0
),"""
_SLOT_NOTICE = """
slot_notice AS (
    SELECT {notify_slot} AS sent
    FROM (SELECT r.entrypoint FROM removed AS r UNION ALL SELECT c.entrypoint FROM changed AS c) AS s
    WHERE s.entrypoint = ANY ($15::text[])
    HAVING count(*) > 0
),"""
_SLOT_NOTICE_AFTER_HAND_OVER = """
slot_notice AS (
    SELECT {notify_slot} AS sent
    FROM (SELECT e.entrypoint FROM ended AS e
          WHERE e.entrypoint = ANY ($15::text[])
          GROUP BY e.entrypoint
          -- A slot handed over to the entrypoint's next job is not free.
          HAVING count(*) > (SELECT count(*) FROM successors AS n WHERE n.entrypoint = e.entrypoint)) AS s
    HAVING count(*) > 0
),"""
_REQUEUE_NOTICE = """
requeue_notice AS (
    SELECT {notify_requeued} AS sent
    FROM changed AS c WHERE c.status <> 'failed'
    HAVING count(*) > 0
)"""
# Counted in the result so that the notices' parts run (a part no one reads is not).
_WRITTEN = """
SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM changed) AS applied,
       (SELECT count(*) FROM finished_notice) + (SELECT count(*) FROM slot_notice)
           + (SELECT count(*) FROM requeue_notice) + (SELECT count(*) FROM settled) AS notices"""


def _with_notices(statement: str) -> str:
    return (
        statement.replace("{notify_finished}", notices.ids("$14", "finished", "array_agg(f.id)"))
        .replace("{notify_slot}", notices.slot("$14", "array_agg(DISTINCT s.entrypoint)"))
        .replace(
            "{notify_requeued}",
            # Due later only when every job requeued is deferred: the soonest of them.
            notices.enqueued(
                "$14",
                "array_agg(DISTINCT c.entrypoint)",
                due_in="CASE WHEN bool_and(c.status = 'deferred') THEN min(c.delay) END",
            ),
        )
    )


# One row: outcomes applied, and notices sent.
RECORD_OUTCOMES = _with_notices(_APPLIED + _FINISHED_NOTICE + _SLOT_NOTICE + _REQUEUE_NOTICE + _WRITTEN + "\n")
# The same with slots handed over ($18-$20, above). A statement of its own: the hand-over's parts made every
# write's plan dearer to make (1.6 ms against 0.6 for a flush of 10 on a connection that plans each execution,
# as PostgreSQL does when it judges a custom plan cheaper), for the few writes that hand a slot over. Rows: the
# applied and notices of RECORD_OUTCOMES, then a successor's ClaimedJob fields by name (NULL without one).
RECORD_OUTCOMES_HANDING_OVER = _with_notices(
    _APPLIED
    + """
ended AS (
    SELECT r.entrypoint FROM removed AS r UNION ALL SELECT c.entrypoint FROM changed AS c
),"""
    + _HAND_OVER
    + ","
    + _FINISHED_NOTICE
    + _SLOT_NOTICE_AFTER_HAND_OVER
    + _REQUEUE_NOTICE
    + """
SELECT a.applied, a.notices, n.*
FROM ("""
    + _WRITTEN
    + """) AS a
LEFT JOIN successors AS n ON true
"""
)

REGISTER_WORKER = """
INSERT INTO {workers} (host, pid, entrypoints) VALUES ($1::text, $2::integer, $3::text[]) RETURNING id
"""

# Re-inserts the row when it is gone (the worker was presumed dead and forgotten, or the table was emptied).
# Also tells a busy worker (whose full claims do not look) whether suspects of its entrypoints wait to run
# alone: one probe of a partial index that is empty unless a job was present in two deaths, once per heartbeat.
HEARTBEAT = """
WITH heartbeat AS (
    INSERT INTO {workers} AS w (id, host, pid, entrypoints) VALUES ($1::bigint, $2::text, $3::integer, $4::text[])
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
)
SELECT COALESCE(array_agg(j.id), ARRAY[]::bigint[]) AS cancel,
       EXISTS (SELECT 1 FROM {jobs} AS s WHERE s.status = 'suspect' AND s.entrypoint = ANY ($4::text[]))
           AS suspects
FROM {jobs} AS j
WHERE j.worker_id = $1::bigint AND j.status = 'picked' AND j.cancel_requested
"""

DEREGISTER_WORKER = "DELETE FROM {workers} WHERE id = $1::bigint"

_REQUEUE_AND_ANNOUNCE = """
announced AS (
    {announce}
)
SELECT COALESCE(array_agg(r.id), ARRAY[]::bigint[]) FROM rescued AS r, (SELECT count(*) FROM announced) AS a
""".replace("{announce}", notices.enqueued_from("$2", "rescued"))

RELEASE_STRAY = (
    """
WITH rescued AS (
    UPDATE {jobs} AS j
    SET status = (CASE WHEN j.isolated THEN 'suspect' ELSE 'queued' END)::{job_status}, isolated = false,
        worker_id = NULL, picked_at = NULL, attempts = greatest(j.attempts - 1, 0)
    WHERE j.worker_id = $1::bigint AND j.status = 'picked' AND NOT (j.id = ANY ($3::bigint[]))
    RETURNING j.id, j.entrypoint
),"""
    + _REQUEUE_AND_ANNOUNCE
)

# What becomes of a dead worker's jobs ($2: the events channel; docs/reliability.md, "When a worker dies").
# ``lost`` (defined by each rescue below) locks the picked jobs of the dead workers and says, per job, whether
# the death is charged to it (it ran alone: claimed isolated, and its worker held no other job) and what the
# death was. Every job counts the death (deaths + 1) and gets its attempt back (deaths never spend retries),
# except one given up: a charged job that has now died alone max_deaths times, logged as 'exception' or held as
# 'failed' with its last run counted. Every other job goes back at once: queued after its first death, a suspect
# (to run alone) after its second, or when charged.
_LOST_MESSAGE = "'killed its worker process (%s) while running alone, in death %s of %s allowed: given up'"
_TAKE_BACK = (
    (
        """
given_up AS (
    DELETE FROM {jobs} AS j USING lost AS l
    WHERE j.id = l.id AND l.charged AND j.lost_runs + 1 >= COALESCE(j.max_deaths, 3) AND NOT j.hold_failures
    RETURNING j.id, j.entrypoint, j.priority, j.attempts, j.dedupe_key, j.worker_id, j.created_at, j.picked_at,
              j.notify_finished, j.lost_runs + 1 AS lost_runs, COALESCE(j.max_deaths, 3) AS max_deaths, l.cause,
              {kept_payload} AS payload, j.has_dependents
),
"""
        + _SETTLED.format(ended="given_up", status="'exception'::text", result="NULL::text", channel="$2")
        + """,
logged AS (
    INSERT INTO {log} (job_id, entrypoint, priority, status, attempts, dedupe_key, worker_id, created_at,
                       started_at, finished_at, error_type, error_message, error_traceback, payload)
    SELECT g.id, g.entrypoint, g.priority, 'exception', g.attempts, g.dedupe_key, g.worker_id,
           g.created_at, g.picked_at, now(), 'pgqd.WorkerLost',
           format({lost_message}, g.cause, g.lost_runs, g.max_deaths), '', g.payload
    FROM given_up AS g
),
held AS (
    UPDATE {jobs} AS j
    SET status = 'failed', isolated = false, worker_id = NULL, picked_at = NULL, lost_runs = j.lost_runs + 1,
        deaths = j.deaths + 1,
        last_error = jsonb_build_object('type', 'pgqd.WorkerLost', 'traceback', '',
                                        'message', format({lost_message}, l.cause, j.lost_runs + 1,
                                                          COALESCE(j.max_deaths, 3)))
    FROM lost AS l
    WHERE j.id = l.id AND l.charged AND j.lost_runs + 1 >= COALESCE(j.max_deaths, 3) AND j.hold_failures
    RETURNING j.id, j.notify_finished
),
back AS (
    UPDATE {jobs} AS j
    SET status = (CASE WHEN l.charged OR j.deaths >= 1 THEN 'suspect' ELSE 'queued' END)::{job_status},
        isolated = false, worker_id = NULL, picked_at = NULL, attempts = greatest(j.attempts - 1, 0),
        deaths = j.deaths + 1, lost_runs = j.lost_runs + l.charged::integer,
        last_error = CASE WHEN l.charged THEN jsonb_build_object(
            'type', 'pgqd.WorkerLost', 'traceback', '',
            'message', format('killed its worker process (%s) while running alone, in death %s of %s allowed',
                              l.cause, j.lost_runs + 1, COALESCE(j.max_deaths, 3))
        ) ELSE j.last_error END
    FROM lost AS l
    WHERE j.id = l.id AND NOT (l.charged AND j.lost_runs + 1 >= COALESCE(j.max_deaths, 3))
    RETURNING j.id, j.entrypoint
),
finished_notice AS (
    SELECT {notify_finished} AS sent
    FROM (SELECT g.id FROM given_up AS g WHERE g.notify_finished
          UNION ALL SELECT h.id FROM held AS h WHERE h.notify_finished) AS f
),
announced AS (
    {announce}
)
SELECT COALESCE(array_agg(l.id ORDER BY l.id), ARRAY[]::bigint[])
FROM lost AS l, (SELECT count(*) FROM announced) AS a, (SELECT count(*) FROM finished_notice) AS f,
     (SELECT count(*) FROM settled) AS s
"""
    )
    .replace("{lost_message}", _LOST_MESSAGE)
    .replace("{kept_payload}", _KEPT_PAYLOAD)
    .replace("{notify_finished}", notices.ids("$2", "finished", "array_agg(f.id)"))
    .replace("{announce}", notices.enqueued_from("$2", "back"))
)
# Charged: the job was claimed to run alone and it is the only job its worker held.
_CHARGED = """j.isolated AND NOT EXISTS (
               SELECT 1 FROM {jobs} AS o WHERE o.worker_id = j.worker_id AND o.status = 'picked' AND o.id <> j.id
           )"""

# $1: the dead worker's id, $3: what killed it (e.g. "killed by signal 9").
RESCUE_WORKER = (
    """
WITH forgotten AS (
    DELETE FROM {workers} WHERE id = $1::bigint
),
lost AS MATERIALIZED (
    SELECT j.id, """
    + _CHARGED
    + """ AS charged, $3::text AS cause
    FROM {jobs} AS j
    WHERE j.worker_id = $1::bigint AND j.status = 'picked'
    FOR UPDATE
),"""
    + _TAKE_BACK
)

# Jobs of silent workers, and picked jobs whose worker row is missing altogether (for longer than the timeout,
# so a worker re-registering after its row vanished is not robbed of the jobs it is running).
RESCUE_STALE = (
    """
WITH stale AS (
    DELETE FROM {workers} WHERE heartbeat_at < now() - make_interval(secs => $1::double precision)
    RETURNING id, host, pid
),
lost AS MATERIALIZED (
    SELECT j.id, """
    + _CHARGED
    + """ AS charged,
           COALESCE(format('no heartbeat for %ss from pid %s on %s', $1::double precision, s.pid, s.host),
                    'its worker vanished') AS cause
    FROM {jobs} AS j LEFT JOIN stale AS s ON s.id = j.worker_id
    WHERE j.status = 'picked'
      AND (s.id IS NOT NULL
           OR (j.picked_at < now() - make_interval(secs => $1::double precision)
               AND NOT EXISTS (SELECT 1 FROM {workers} AS w WHERE w.id = j.worker_id)))
    FOR UPDATE OF j
),"""
    + _TAKE_BACK
)

CANCEL_JOBS = (
    (
        """
WITH wanted AS (
    SELECT DISTINCT unnest($1::bigint[]) AS id
),
removed AS (
    DELETE FROM {jobs} AS j USING wanted AS w
    WHERE j.id = w.id AND j.status <> 'picked'
    RETURNING j.id, j.entrypoint, j.priority, j.attempts, j.dedupe_key, j.created_at, j.notify_finished,
              j.last_error, j.errors, {kept_payload} AS payload, j.has_dependents
),
"""
        + _SETTLED.format(ended="removed", status="$2::text", result="NULL::text", channel="$3")
        + """,
logged AS (
    INSERT INTO {log} (job_id, entrypoint, priority, status, attempts, dedupe_key, created_at, finished_at,
                       error_type, error_message, error_traceback, errors, payload)
    SELECT r.id, r.entrypoint, r.priority, $2::{final_status}, r.attempts, r.dedupe_key, r.created_at, now(),
           r.last_error->>'type', r.last_error->>'message', r.last_error->>'traceback', r.errors, r.payload
    FROM removed AS r
),
signalled AS (
    UPDATE {jobs} AS j SET cancel_requested = true
    FROM wanted AS w
    WHERE j.id = w.id AND j.status = 'picked'
    RETURNING j.id
)
SELECT COALESCE((SELECT array_agg(r.id) FROM removed AS r), ARRAY[]::bigint[]) AS canceled,
       COALESCE((SELECT array_agg(s.id) FROM signalled AS s), ARRAY[]::bigint[]) AS signalled,
       {notify_finished},
       {notify_cancel},
       (SELECT count(*) FROM settled) AS settled
"""
    )
    .replace("{kept_payload}", _KEPT_PAYLOAD)
    .replace(
        "{notify_finished}",
        notices.ids("$3", "finished", "(SELECT array_agg(r.id) FROM removed AS r WHERE r.notify_finished)"),
    )
    .replace("{notify_cancel}", notices.ids("$3", "cancel", "(SELECT array_agg(s.id) FROM signalled AS s)"))
)

REQUEUE_HELD = """
WITH requeued AS (
    UPDATE {jobs} AS j
    SET status = 'queued', attempts = 0, lost_runs = 0, deaths = 0, execute_after = now(), worker_id = NULL,
        picked_at = NULL
    WHERE j.id = ANY ($1::bigint[]) AND j.status = 'failed'
    RETURNING j.id, j.entrypoint
),
announced AS (
    {announce}
)
SELECT COALESCE(array_agg(r.id ORDER BY r.id), ARRAY[]::bigint[])
FROM requeued AS r, (SELECT count(*) FROM announced) AS a
""".replace("{announce}", notices.enqueued_from("$2", "requeued"))

JOB_STATES = """
SELECT j.id, j.entrypoint, j.status::text AS status, j.attempts, j.priority, j.created_at,
       NULL::timestamptz AS finished_at, j.last_error->>'type' AS error_type,
       j.last_error->>'message' AS error_message, j.last_error->>'traceback' AS error_traceback,
       NULL::text AS result, j.payload
FROM {jobs} AS j WHERE j.id = ANY ($1::bigint[])
UNION ALL
SELECT l.job_id, l.entrypoint, l.status::text, l.attempts, l.priority, l.created_at, l.finished_at,
       l.error_type, l.error_message, l.error_traceback, l.result::text, l.payload
FROM {log} AS l WHERE l.job_id = ANY ($1::bigint[])
"""

# The row lock this update takes makes a claim running at the same moment skip the job (SKIP LOCKED) and report
# nothing to do, so a claimable job is announced again: claimers look once more after this commits.
WATCH_FINISHED = """
WITH watched AS (
    UPDATE {jobs} SET notify_finished = true WHERE id = $1::bigint
    RETURNING id, entrypoint, status, execute_after
),
announced AS (
    SELECT {announce} AS sent
    FROM watched AS w
    WHERE w.status = 'queued' OR (w.status = 'deferred' AND w.execute_after <= now())
)
SELECT w.id FROM watched AS w, (SELECT count(*) FROM announced) AS a
""".replace("{announce}", notices.enqueued("$2", "ARRAY[w.entrypoint]"))

# Config → table, on start and reload. A schedule whose cron or time zone changed, or that is enabled again,
# starts from its next tick; otherwise next_run stays, so a restart neither skips nor repeats a tick.
SYNC_SCHEDULES = """
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::integer[],
                         $7::boolean[], $8::text[], $9::timestamptz[])
        AS w(name, cron, timezone, entrypoint, payload, priority, enabled, misfire, first_run)
),
removed AS (
    DELETE FROM {schedules} AS s WHERE NOT EXISTS (SELECT 1 FROM wanted AS w WHERE w.name = s.name)
    RETURNING s.name
),
upserted AS (
    INSERT INTO {schedules} AS s (name, cron, timezone, entrypoint, payload, priority, enabled, misfire, next_run)
    SELECT w.name, w.cron, w.timezone, w.entrypoint, w.payload, w.priority, w.enabled, w.misfire, w.first_run
    FROM wanted AS w
    ON CONFLICT (name) DO UPDATE SET
        next_run = CASE
            WHEN s.cron <> EXCLUDED.cron OR s.timezone <> EXCLUDED.timezone OR (EXCLUDED.enabled AND NOT s.enabled)
            THEN EXCLUDED.next_run ELSE s.next_run END,
        cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, entrypoint = EXCLUDED.entrypoint,
        payload = EXCLUDED.payload, priority = EXCLUDED.priority, enabled = EXCLUDED.enabled,
        misfire = EXCLUDED.misfire, updated_at = now()
    RETURNING s.name
)
SELECT (SELECT count(*) FROM removed) AS removed, (SELECT count(*) FROM upserted) AS upserted
"""

# The server's time, which every scheduler of a fleet fires by (not its host's clock, which may be off).
DATABASE_CLOCK = "SELECT clock_timestamp()"

SCHEDULE_STATES = """
SELECT s.name, s.cron, s.timezone, s.entrypoint, s.payload, s.priority, s.enabled, s.misfire, s.next_run,
       s.last_run, s.last_job_id, COALESCE(l.status::text, j.status::text) AS last_status
FROM {schedules} AS s
LEFT JOIN {log} AS l ON l.job_id = s.last_job_id
LEFT JOIN {jobs} AS j ON j.id = s.last_job_id
ORDER BY s.name
"""

# Moves next_run forward only if it still holds the tick this scheduler saw due (the compare-and-set that makes
# a tick fire once across the fleet) and, only then, enqueues the tick's jobs, all in one statement.
FIRE_SCHEDULE = """
WITH input AS MATERIALIZED (
    SELECT nextval('{jobs_id_seq}') AS id, u.*
    FROM unnest($4::text[], $5::bytea[], $6::text[], $7::integer[]) WITH ORDINALITY
         AS u(entrypoint, payload, headers, priority, ord)
),
moved AS (
    UPDATE {schedules}
    SET next_run = $3::timestamptz, last_run = COALESCE($8::timestamptz, last_run),
        last_job_id = COALESCE((SELECT max(i.id) FROM input AS i), last_job_id), updated_at = now()
    WHERE name = $1::text AND next_run = $2::timestamptz
    RETURNING name
),
inserted AS (
    INSERT INTO {jobs} (id, entrypoint, payload, headers, priority)
    SELECT i.id, i.entrypoint, i.payload, i.headers::jsonb, i.priority
    FROM input AS i
    WHERE EXISTS (SELECT 1 FROM moved)
    RETURNING id, entrypoint
),
announced AS (
    {announce}
)
SELECT (SELECT count(*) FROM moved) AS won,
       COALESCE((SELECT array_agg(n.id ORDER BY n.id) FROM inserted AS n), ARRAY[]::bigint[]) AS ids,
       (SELECT count(*) FROM announced) AS announced
""".replace("{announce}", notices.enqueued_from("$9", "inserted"))


class Statements:
    """The statements above, rendered for one install."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.enqueue_or_raise = render(ENQUEUE_OR_RAISE, names)
        self.enqueue_or_skip = render(ENQUEUE_OR_SKIP, names)
        self.enqueue_or_raise_priority = render(ENQUEUE_OR_RAISE_PRIORITY, names)
        self.enqueue_one = render(ENQUEUE_ONE, names)
        self.enqueue_one_or_raise = render(_one_job(ENQUEUE_OR_RAISE), names)
        self.enqueue_one_or_skip = render(_one_job(ENQUEUE_OR_SKIP), names)
        self.enqueue_one_or_raise_priority = render(_one_job(ENQUEUE_OR_RAISE_PRIORITY), names)
        self.enqueue_plain = render(ENQUEUE_PLAIN, names)
        self.enqueue_uniform = render(ENQUEUE_UNIFORM, names)
        self.enqueue_bare = render(ENQUEUE_BARE, names)
        self.claim_jobs = render(CLAIM_JOBS, names)
        self.record_outcomes = render(RECORD_OUTCOMES, names)
        self.record_outcomes_handing_over = render(RECORD_OUTCOMES_HANDING_OVER, names)
        self.register_worker = render(REGISTER_WORKER, names)
        self.heartbeat = render(HEARTBEAT, names)
        self.deregister_worker = render(DEREGISTER_WORKER, names)
        self.release_stray = render(RELEASE_STRAY, names)
        self.rescue_worker = render(RESCUE_WORKER, names)
        self.rescue_stale = render(RESCUE_STALE, names)
        self.cancel_jobs = render(CANCEL_JOBS, names)
        self.requeue_held = render(REQUEUE_HELD, names)
        self.job_states = render(JOB_STATES, names)
        self.watch_finished = render(WATCH_FINISHED, names)
        self.sync_schedules = render(SYNC_SCHEDULES, names)
        self.schedule_states = render(SCHEDULE_STATES, names)
        self.fire_schedule = render(FIRE_SCHEDULE, names)


@functools.lru_cache(maxsize=64)
def statements_for(names: Names) -> Statements:
    """The rendered statements of an install, rendered once: producers are often built per request."""
    return Statements(names)
