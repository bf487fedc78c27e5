-- pgqd schema version 15: a claim that names no limit runs a plan of its own, without the parts only limits need;
-- VACUUM no longer truncates the jobs table; and the log's hourly rollup counts each row once.
--
-- A claim's fixed cost on the server is mostly the start and end of its statement's executor, and that grows with
-- the plan: the claim of version 14 is one plan for every request, with the allowances (a join to the limit rows,
-- the running-job counts, the tokens), the suspects' branch, the spending of tokens and three kinds of hint that
-- concern limited entrypoints only. A claim of 10 jobs cost ~430 µs of server CPU, ~320 µs of it whatever the
-- batch, and a third of that was the executor's start (perf of the backend). A request without limits that is not
-- isolated, the common case of every worker serving unlimited entrypoints, now runs a plan of the queued and due
-- jobs and the claim, and only when that came back short a second statement for its two hints ('due' and
-- 'suspects'). It returns the rows the full plan gives it, since nothing left out can apply to it. Requests with
-- limits, and isolated ones, run version 14's statements, with two changes: the claim's UPDATE finds its rows
-- through an array of their ctids, not a join (see the comment there), as the new plan does; and a
-- concurrency-limited entrypoint whose last free places a claim took is reported closed at once (see there).
--
-- Server CPU of a claim without limits from a deep queue, through PostgresBackend.claim on one connection: 333 ->
-- 200 µs for 1 job, 433 -> 300 µs for 10. A drain of 100,000 jobs by 2 worker processes: PostgreSQL's CPU per job
-- 78 -> 58 µs at batch 10 and 29 -> 23 µs at batch 100 (docs/performance.md).
--
-- The signature and the contract of the rows are those of version 14 (CLAIM_JOBS in pgqd/sql/statements.py).

-- No truncation by VACUUM of the jobs table. As a backlog drains, the pages at the table's end empty, and each
-- vacuum then waited up to 5 s for an exclusive lock to cut them off (the wait event VacuumTruncate in 7 % of
-- samples of a drain); holding it, every claim, enqueue and outcome write stopped, and the next inserts had to
-- extend the file again. A queue's table refills what it empties: the space is worth keeping.
ALTER TABLE {jobs} SET (vacuum_truncate = false);

CREATE OR REPLACE FUNCTION {claim_jobs}(
    p_worker_id bigint,
    p_batch integer,
    p_entrypoints text[],
    p_concurrency integer[],
    p_rate double precision[],
    p_burst double precision[],
    p_isolated boolean DEFAULT NULL,
    p_max_attempts integer[] DEFAULT NULL,
    p_hold boolean[] DEFAULT NULL,
    p_max_deaths integer[] DEFAULT NULL,
    p_report_closed boolean DEFAULT false
) RETURNS TABLE (
    id bigint,
    entrypoint text,
    payload bytea,
    headers text,
    priority integer,
    attempts integer,
    created_at timestamptz,
    execute_after timestamptz,
    picked_at timestamptz,
    cancel_requested boolean,
    lost_runs integer,
    wake_in double precision,
    hint text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz;
    v_with_work text[];  -- limited entrypoints with claimable work: the only limit rows this claim reads
    v_held text[];       -- those of them whose limit row this claim holds
    v_created text[];
    v_claimed bigint;
BEGIN
    -- Paused entrypoints are dropped from the request before anything else, so they are neither claimed nor
    -- named in wake-up hints. With nothing paused (no row) this is one look at an empty table.
    PERFORM 1 FROM {entrypoint_pauses} LIMIT 1;
    IF FOUND THEN
        SELECT array_agg(u.ep ORDER BY u.ord), array_agg(u.conc ORDER BY u.ord),
               array_agg(u.rate ORDER BY u.ord), array_agg(u.burst ORDER BY u.ord)
        INTO p_entrypoints, p_concurrency, p_rate, p_burst
        FROM unnest(p_entrypoints, p_concurrency, p_rate, p_burst) WITH ORDINALITY AS u(ep, conc, rate, burst, ord)
        WHERE NOT COALESCE(
            (SELECT p.paused FROM {entrypoint_pauses} AS p WHERE p.entrypoint = u.ep),
            (SELECT p.paused FROM {entrypoint_pauses} AS p WHERE p.entrypoint = '*'),
            false);
        IF p_entrypoints IS NULL THEN
            RETURN;
        END IF;
    END IF;

    IF p_isolated THEN
        p_batch := 1;  -- a suspect runs alone
    ELSIF NOT (0 < ANY (p_concurrency) OR 0 < ANY (p_rate)) THEN
        -- No limit named and no suspect wanted: the claim alone, and the two hints of a claim that came back short.
        v_now := clock_timestamp();
        RETURN QUERY
        WITH candidates AS (
            SELECT c.tid, c.id, c.priority
            FROM unnest(p_entrypoints) AS w(ep),
            LATERAL (
                SELECT r.tid, r.id, r.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'queued'
                    ORDER BY j.priority DESC, j.id
                    LIMIT p_batch
                    FOR UPDATE SKIP LOCKED
                ) AS r
                UNION ALL
                SELECT d.tid, d.id, d.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                    ORDER BY j.execute_after
                    LIMIT p_batch
                    FOR UPDATE SKIP LOCKED
                ) AS d
                ORDER BY 3 DESC, 2
                LIMIT p_batch
            ) AS c
            ORDER BY c.priority DESC, c.id
            LIMIT p_batch
        ),
        claimed AS (
            -- By ctid, as below: the row a FOR UPDATE locked cannot change before this transaction ends. As an
            -- array, not a join: a generic plan guesses a tenth of the table for LIMIT p_batch, and with that
            -- guess a join hashed the whole table (a claim of 10 took 2 ms on 60,000 jobs); a TID scan of the
            -- array's items is the only plan there is.
            UPDATE {jobs} AS j
            SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
                isolated = false, max_deaths = NULL, hold_failures = false
            WHERE j.ctid = ANY (ARRAY(SELECT c.tid FROM candidates AS c))
            RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                      j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
        )
        SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c ORDER BY c.priority DESC, c.id;
        -- The hints only for a claim that came back short, in a statement of their own: a full claim's plan
        -- (the drain of a backlog) does not carry them.
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
        IF v_claimed < p_batch THEN
            RETURN QUERY
            SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
                   NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
                   GREATEST(extract(epoch FROM min(n.execute_after) - clock_timestamp()), 0)::double precision,
                   'due'::text
            FROM unnest(p_entrypoints) AS u(ep),
            LATERAL (
                SELECT j.execute_after FROM {jobs} AS j
                WHERE j.entrypoint = u.ep AND j.status = 'deferred' AND j.execute_after > v_now
                ORDER BY j.execute_after
                LIMIT 1
            ) AS n
            HAVING min(n.execute_after) IS NOT NULL
            UNION ALL
            SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
                   NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
                   NULL::double precision, 'suspects'::text
            WHERE p_isolated IS NOT NULL
              AND EXISTS (SELECT 1 FROM {jobs} AS j
                          WHERE j.status = 'suspect' AND j.entrypoint = ANY (p_entrypoints));
        END IF;
        RETURN;
    END IF;

    -- A simple expression (no statement): a request without limits goes straight to the claim.
    IF 0 < ANY (p_concurrency) OR 0 < ANY (p_rate) THEN
        -- A variable, not clock_timestamp() in the probe: a volatile call cannot bound an index scan, and the
        -- probe of an entrypoint with nothing due would read all its deferred jobs.
        v_now := clock_timestamp();
        -- A limited entrypoint's limit row is read only when it has claimable work: one ordered probe of its
        -- partial indexes (ready and due, or suspects for an isolated claim). Nothing queued, nothing to lock.
        -- One claimer at a time per limited entrypoint, and the others do not wait: they claim everything else
        -- and are told (a 'throttled' hint) to come back for this one in a moment.
        WITH work AS (
            SELECT u.ep
            FROM unnest(p_entrypoints, p_concurrency, p_rate) AS u(ep, conc, rate)
            WHERE (u.conc > 0 OR u.rate > 0)
              AND CASE WHEN p_isolated THEN
                      (SELECT j.id FROM {jobs} AS j WHERE j.entrypoint = u.ep AND j.status = 'suspect'
                       ORDER BY j.priority DESC, j.id LIMIT 1) IS NOT NULL
                  ELSE
                      (SELECT j.id FROM {jobs} AS j WHERE j.entrypoint = u.ep AND j.status = 'queued'
                       ORDER BY j.priority DESC, j.id LIMIT 1) IS NOT NULL
                      OR (SELECT j.id FROM {jobs} AS j
                          WHERE j.entrypoint = u.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                          ORDER BY j.execute_after LIMIT 1) IS NOT NULL
                  END
        ),
        held AS (
            SELECT l.entrypoint FROM {entrypoint_limits} AS l
            WHERE l.entrypoint IN (SELECT w.ep FROM work AS w)
            ORDER BY l.entrypoint
            FOR UPDATE SKIP LOCKED
        )
        SELECT (SELECT array_agg(w.ep) FROM work AS w), (SELECT array_agg(h.entrypoint) FROM held AS h)
        INTO v_with_work, v_held;

        IF cardinality(v_with_work) > COALESCE(cardinality(v_held), 0) THEN
            -- Some entrypoint with work was not locked: another claim holds its row, or it has none yet. The first
            -- claim ever of an entrypoint creates its row, and holds it until it commits.
            WITH created AS (
                INSERT INTO {entrypoint_limits} AS l (entrypoint, tokens, refilled_at)
                SELECT u.ep, u.burst, clock_timestamp()
                FROM unnest(p_entrypoints, p_burst) AS u(ep, burst)
                WHERE u.ep = ANY (v_with_work) AND NOT COALESCE(u.ep = ANY (v_held), false)
                  AND NOT EXISTS (SELECT 1 FROM {entrypoint_limits} AS e WHERE e.entrypoint = u.ep)
                -- In name order, as every claimer: two first claims that wait for each other's row cannot
                -- each hold the row the other waits for.
                ORDER BY u.ep
                ON CONFLICT DO NOTHING
                RETURNING l.entrypoint
            )
            SELECT array_agg(c.entrypoint) INTO v_created FROM created AS c;
            v_held := v_held || v_created;
        END IF;
    END IF;

    -- Counted in a statement after the lock, so on a snapshot that sees every claim that held it before: with
    -- the row held, nobody else can add a running job of this entrypoint until this claim commits.
    v_now := clock_timestamp();
    RETURN QUERY
    WITH wanted AS (
        SELECT u.ep, u.conc, u.rate, t.tokens, u.conc > 0 OR u.rate > 0 AS limited,
               CASE
                   WHEN u.conc <= 0 AND u.rate <= 0 THEN p_batch
                   WHEN l.entrypoint IS NULL THEN 0  -- limited, and its row is not held by this claim
                   ELSE LEAST(
                       p_batch,
                       CASE WHEN u.conc > 0 THEN GREATEST(u.conc - (
                           SELECT count(*) FROM {jobs} AS j WHERE j.status = 'picked' AND j.entrypoint = u.ep
                       ), 0)::integer ELSE p_batch END,
                       CASE WHEN u.rate > 0 THEN floor(t.tokens)::integer ELSE p_batch END
                   )
               END AS allow
        FROM unnest(p_entrypoints, p_concurrency, p_rate, p_burst) AS u(ep, conc, rate, burst)
        LEFT JOIN {entrypoint_limits} AS l ON l.entrypoint = u.ep AND l.entrypoint = ANY (v_held)
        CROSS JOIN LATERAL (
            SELECT LEAST(u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at)) AS tokens
        ) AS t
    ),
    candidates AS (
        SELECT c.tid, c.id, c.priority
        FROM wanted AS w,
        LATERAL (
            SELECT r.tid, r.id, r.priority FROM (
                SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                WHERE j.entrypoint = w.ep AND j.status = 'queued' AND p_isolated IS NOT TRUE
                ORDER BY j.priority DESC, j.id
                LIMIT w.allow
                FOR UPDATE SKIP LOCKED
            ) AS r
            UNION ALL
            SELECT d.tid, d.id, d.priority FROM (
                SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                WHERE j.entrypoint = w.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                  AND p_isolated IS NOT TRUE
                ORDER BY j.execute_after
                LIMIT w.allow
                FOR UPDATE SKIP LOCKED
            ) AS d
            UNION ALL
            -- An isolated claim reads the suspects and nothing else.
            SELECT s.tid, s.id, s.priority FROM (
                SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                WHERE j.entrypoint = w.ep AND j.status = 'suspect' AND p_isolated
                ORDER BY j.priority DESC, j.id
                LIMIT w.allow
                FOR UPDATE SKIP LOCKED
            ) AS s
            ORDER BY 3 DESC, 2
            LIMIT w.allow
        ) AS c
        WHERE w.allow > 0
        ORDER BY c.priority DESC, c.id
        LIMIT p_batch
    ),
    claimed AS (
        -- A row locked by the FOR UPDATE above cannot change before this transaction ends, so the version it
        -- locked (whose ctid the candidates carry) is the one found here: a TID scan, no primary-key look-up.
        UPDATE {jobs} AS j
        SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
            isolated = p_isolated IS TRUE,
            max_deaths = CASE WHEN p_isolated
                              THEN COALESCE(p_max_deaths[array_position(p_entrypoints, j.entrypoint)], 3) END,
            hold_failures = p_isolated IS TRUE AND p_hold[array_position(p_entrypoints, j.entrypoint)]
        WHERE j.ctid = ANY (ARRAY(SELECT c.tid FROM candidates AS c))  -- not a join: see the claim above
        RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                  j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
    ),
    taken AS (
        SELECT c.entrypoint, count(*)::integer AS n FROM claimed AS c GROUP BY c.entrypoint
    ),
    spent AS (
        UPDATE {entrypoint_limits} AS l
        SET tokens = w.tokens - n.n, refilled_at = v_now
        FROM taken AS n, wanted AS w
        WHERE l.entrypoint = n.entrypoint AND w.ep = n.entrypoint AND w.rate > 0
        RETURNING 1
    ),
    short AS (
        -- Fewer jobs than asked for: the hints of an idle queue are worth their probes.
        SELECT 1 WHERE (SELECT count(*) FROM claimed) < p_batch
    )
    (SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c ORDER BY c.priority DESC, c.id)
    UNION ALL
    -- A limited entrypoint with work whose row another claim held: look again in a moment (it holds the row for
    -- the length of one claim).
    SELECT NULL::bigint, u.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
           NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
           0.005::double precision, 'throttled'::text
    FROM unnest(v_with_work) AS u(ep)
    WHERE NOT COALESCE(u.ep = ANY (v_held), false)
    UNION ALL
    -- A rate-limited entrypoint held here that is left with less than a token, and may have more work (this claim
    -- took all it was allowed): when the next token is.
    SELECT NULL::bigint, w.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
           NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
           (1 - (w.tokens - COALESCE(n.n, 0))) / w.rate, 'throttled'::text
    FROM wanted AS w LEFT JOIN taken AS n ON n.entrypoint = w.ep
    WHERE w.rate > 0 AND w.ep = ANY (v_held) AND w.tokens - COALESCE(n.n, 0) < 1 AND COALESCE(n.n, 0) >= w.allow
    UNION ALL
    -- Limited entrypoints this claim could take nothing of, for a reason that lasts until a notification names
    -- them or a moment passes: no claimable work, a full concurrency limit, or a full batch of jobs that come
    -- before all of its own (by priority and id, which a moment does not change while the backlog drains). And
    -- (version 15) a concurrency-limited one whose last free places this claim just took: the next claim would
    -- find its limit full, so it waits for the 'slot' notice as well, rather than run this plan once more to learn
    -- it. A worker that asks for these (p_report_closed) leaves them out of its next claims until then
    -- (pgqd/worker/limit_gates.py).
    SELECT NULL::bigint, w.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
           NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
           NULL::double precision, 'closed'::text
    FROM wanted AS w LEFT JOIN taken AS n ON n.entrypoint = w.ep
    WHERE p_report_closed AND w.limited
      AND CASE WHEN n.entrypoint IS NOT NULL
               -- Fewer than a batch allowed, and not for want of tokens: the concurrency limit set it.
               THEN w.conc > 0 AND w.rate <= 0 AND w.allow < p_batch AND n.n >= w.allow
               WHEN w.allow = 0
               THEN NOT COALESCE(w.ep = ANY (v_with_work), false)
                    OR (w.ep = ANY (v_held) AND NOT (w.rate > 0 AND w.tokens < 1))
               ELSE (SELECT count(*) FROM claimed) >= p_batch
          END
    UNION ALL
    -- The next deferred job not yet due, when the claim came back short.
    SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
           NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
           GREATEST(extract(epoch FROM min(n.execute_after) - clock_timestamp()), 0)::double precision,
           'due'::text
    FROM short, unnest(p_entrypoints) AS u(ep),
    LATERAL (
        SELECT j.execute_after FROM {jobs} AS j
        WHERE j.entrypoint = u.ep AND j.status = 'deferred' AND j.execute_after > v_now
        ORDER BY j.execute_after
        LIMIT 1
    ) AS n
    HAVING min(n.execute_after) IS NOT NULL
    UNION ALL
    -- A claim that came back short says whether suspects wait; an isolated claim says whether more wait. A full
    -- claim does not look: no cost on a deep queue (the heartbeat tells busy workers).
    SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
           NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
           NULL::double precision, 'suspects'::text
    WHERE (p_isolated OR (p_isolated IS NOT NULL AND EXISTS (SELECT 1 FROM short)))
      AND EXISTS (SELECT 1 FROM {jobs} AS j
                  WHERE j.status = 'suspect' AND j.entrypoint = ANY (p_entrypoints)
                    -- The snapshot predates this claim: the suspect it took is still one there.
                    AND NOT EXISTS (SELECT 1 FROM claimed AS c WHERE c.id = j.id));
END;
$$;

-- The hourly rollup of the log now adds each settled stretch of the log to its hours' counts once
-- (pgqd/daemon/worker/log_rollup.py), where each pass used to count the whole current hour again: at 15,000 jobs a
-- second a pass read millions of rows, and the snapshot it held that long kept VACUUM from removing any of the
-- jobs table's dead rows. No data changes: log_rollup_state.rolled_at, the time of the last pass, is where the log
-- was counted up to, which is what the new passes read it as; and a daemon of version 14 still running during a
-- rolling upgrade counts its hour whole, as before, and moves the same position.
