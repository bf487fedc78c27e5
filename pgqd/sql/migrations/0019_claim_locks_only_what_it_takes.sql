-- pgqd schema version 19: a big claim from the starts of several entrypoints locks only the jobs it takes.
--
-- The claim reads each entrypoint's ready and due jobs up to its allowance, with FOR UPDATE SKIP LOCKED, merges
-- them by priority and id and takes the first batch. With a backlog in several entrypoints it so locked up to a
-- batch of each: a claim of 100 from five busy entrypoints locked 500 rows and took 100, and while it ran the
-- other claims stepped over the 400 it held for nothing. Such a claim now counts each entrypoint's share of the
-- batch first, on the same reads without locks, and then locks no more than that share of each.
--
-- The count costs a second read of the jobs taken and a few steps of its own, so it pays only where the locks
-- it saves are many: when the starts the worker sends (one for each entrypoint its claim before took jobs of)
-- name entrypoints that would lock at least c_shares_from (200) rows beyond the batch.
-- benchmarks/profile_drain.py, the realistic mix without its limited entrypoints (five busy), the server's CPU
-- per job, medians of runs alternating with version 18: 2 processes at batch 100, 18.3 -> 15.9 us; 1 process at
-- batch 100, 17.8 -> 17.0 us. At batch 10, where the surplus is 40 rows, the count cost more than it saved
-- (1 process: 41.8 -> 44.5 us), so claims of the default batch run as before.
--
-- The signature is the same, so the function is replaced in place and keeps its grants. Otherwise it is
-- version 18's.

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
    p_report_closed boolean DEFAULT false,
    p_scan_from_priority integer[] DEFAULT NULL,
    p_scan_from_id bigint[] DEFAULT NULL
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
    v_limited boolean;
    v_allow integer[];            -- per requested entrypoint, in the request's order: the most this claim may take
    v_tokens double precision[];  -- per requested entrypoint: a held rate limit's tokens at v_now, else NULL
    v_with_work text[];           -- limited entrypoints with claimable work: the only limit rows this claim reads
    v_held text[];                -- those of them whose limit row this claim holds
    v_created text[];
    v_claimed bigint;
    -- The surplus of locked rows from which a claim from starts counts the shares first (see above).
    c_shares_from CONSTANT integer := 200;
BEGIN
    -- Paused entrypoints are dropped from the request before anything else, so they are neither claimed nor
    -- named in wake-up hints. With nothing paused (no row) this is one look at an empty table.
    PERFORM 1 FROM {entrypoint_pauses} LIMIT 1;
    IF FOUND THEN
        SELECT array_agg(u.ep ORDER BY u.ord), array_agg(u.conc ORDER BY u.ord),
               array_agg(u.rate ORDER BY u.ord), array_agg(u.burst ORDER BY u.ord),
               array_agg(u.from_priority ORDER BY u.ord), array_agg(u.from_id ORDER BY u.ord)
        INTO p_entrypoints, p_concurrency, p_rate, p_burst, p_scan_from_priority, p_scan_from_id
        FROM unnest(p_entrypoints, p_concurrency, p_rate, p_burst, p_scan_from_priority, p_scan_from_id)
             WITH ORDINALITY AS u(ep, conc, rate, burst, from_priority, from_id, ord)
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
    END IF;
    -- A variable, not clock_timestamp() in the statements: a volatile call cannot bound an index scan, and the
    -- probe of an entrypoint with nothing due would read all its deferred jobs.
    v_now := clock_timestamp();
    v_limited := 0 < ANY (p_concurrency) OR 0 < ANY (p_rate);

    IF NOT v_limited THEN
        v_allow := array_fill(p_batch, ARRAY[cardinality(p_entrypoints)]);
    ELSE
        -- A limited entrypoint's limit row is read only when it has claimable work: one ordered probe of its
        -- partial indexes (ready and due, or suspects for an isolated claim). Nothing queued, nothing to lock.
        -- One claimer at a time per limited entrypoint, and the others do not wait: they claim everything else
        -- and are told (a 'throttled' hint) to come back for this one in a moment.
        WITH work AS (
            SELECT u.ep
            FROM unnest(p_entrypoints, p_concurrency, p_rate, p_scan_from_priority, p_scan_from_id)
                AS u(ep, conc, rate, from_priority, from_id)
            WHERE (u.conc > 0 OR u.rate > 0)
              AND CASE WHEN p_isolated THEN
                      (SELECT j.id FROM {jobs} AS j WHERE j.entrypoint = u.ep AND j.status = 'suspect'
                       ORDER BY j.priority DESC, j.id LIMIT 1) IS NOT NULL
                  WHEN u.from_id IS NULL THEN
                      (SELECT j.id FROM {jobs} AS j WHERE j.entrypoint = u.ep AND j.status = 'queued'
                       ORDER BY j.priority DESC, j.id LIMIT 1) IS NOT NULL
                      OR (SELECT j.id FROM {jobs} AS j
                          WHERE j.entrypoint = u.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                          ORDER BY j.execute_after LIMIT 1) IS NOT NULL
                  ELSE
                      -- From where the worker's last claim of it started, as the claim below reads it.
                      (SELECT j.id FROM {jobs} AS j WHERE j.entrypoint = u.ep AND j.status = 'queued'
                       AND j.priority <= u.from_priority AND j.priority >= u.from_priority
                       AND j.id >= u.from_id ORDER BY j.priority DESC, j.id LIMIT 1) IS NOT NULL
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

        -- Counted in a statement after the lock, so on a snapshot that sees every claim that held it before: with
        -- the row held, nobody else can add a running job of this entrypoint until this claim commits.
        v_now := clock_timestamp();
        SELECT array_agg(a.allow ORDER BY u.ord), array_agg(t.tokens ORDER BY u.ord)
        INTO v_allow, v_tokens
        FROM unnest(p_entrypoints, p_concurrency, p_rate, p_burst) WITH ORDINALITY AS u(ep, conc, rate, burst, ord)
        LEFT JOIN {entrypoint_limits} AS l ON l.entrypoint = u.ep AND l.entrypoint = ANY (v_held)
        CROSS JOIN LATERAL (
            SELECT CASE WHEN u.rate > 0
                        THEN LEAST(u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at))
                   END AS tokens
        ) AS t
        CROSS JOIN LATERAL (
            SELECT CASE
                       WHEN u.conc <= 0 AND u.rate <= 0 THEN p_batch
                       WHEN l.entrypoint IS NULL THEN 0  -- limited, and its row is not held by this claim
                       ELSE LEAST(
                           p_batch,
                           CASE WHEN u.conc > 0 THEN GREATEST(u.conc - (
                               SELECT count(*) FROM {jobs} AS j WHERE j.status = 'picked' AND j.entrypoint = u.ep
                           ), 0)::integer ELSE p_batch END,
                           CASE WHEN u.rate > 0 THEN GREATEST(floor(t.tokens), 0)::integer ELSE p_batch END
                       )
                   END AS allow
        ) AS a;
    END IF;

    IF p_isolated THEN
        -- An isolated claim reads the suspects and nothing else.
        RETURN QUERY
        WITH candidates AS (
            SELECT c.tid, c.id, c.priority
            FROM unnest(p_entrypoints, v_allow) AS w(ep, allow),
            LATERAL (
                SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                WHERE j.entrypoint = w.ep AND j.status = 'suspect'
                ORDER BY j.priority DESC, j.id
                LIMIT w.allow
                FOR UPDATE SKIP LOCKED
            ) AS c
            WHERE w.allow > 0
            ORDER BY c.priority DESC, c.id
            LIMIT p_batch
        ),
        claimed AS (
            UPDATE {jobs} AS j
            SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
                isolated = true,
                max_deaths = COALESCE(p_max_deaths[array_position(p_entrypoints, j.entrypoint)], 3),
                hold_failures = COALESCE(p_hold[array_position(p_entrypoints, j.entrypoint)], false)
            WHERE j.ctid = ANY (ARRAY(SELECT c.tid FROM candidates AS c))  -- not a join: see the claim below
            RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                      j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
        )
        SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c;
    ELSIF p_scan_from_id IS NULL THEN
        -- A whole read of every entrypoint's ready jobs: version 16's statement.
        RETURN QUERY
        WITH candidates AS (
            SELECT c.tid, c.id, c.priority
            FROM unnest(p_entrypoints, v_allow) AS w(ep, allow),
            LATERAL (
                SELECT r.tid, r.id, r.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'queued'
                    ORDER BY j.priority DESC, j.id
                    LIMIT w.allow
                    FOR UPDATE SKIP LOCKED
                ) AS r
                UNION ALL
                SELECT d.tid, d.id, d.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                    ORDER BY j.execute_after
                    LIMIT w.allow
                    FOR UPDATE SKIP LOCKED
                ) AS d
                ORDER BY 3 DESC, 2
                LIMIT w.allow
            ) AS c
            WHERE w.allow > 0
            ORDER BY c.priority DESC, c.id
            LIMIT p_batch
        ),
        claimed AS (
            -- By ctid: the row a FOR UPDATE locked cannot change before this transaction ends. As an array, not a
            -- join: a generic plan guesses a tenth of the table for a LIMIT it cannot read, and with that guess a
            -- join hashed the whole table (a claim of 10 took 2 ms on 60,000 jobs); a TID scan of the array's
            -- items is the only plan there is.
            UPDATE {jobs} AS j
            SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
                isolated = false, max_deaths = NULL, hold_failures = false
            WHERE j.ctid = ANY (ARRAY(SELECT c.tid FROM candidates AS c))
            RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                      j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
        )
        SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c ORDER BY c.priority DESC, c.id;
    ELSIF (cardinality(array_remove(p_scan_from_id, NULL)) - 1) * p_batch < c_shares_from THEN
        -- From the worker's starts: the statement above, with the ready jobs read from them.
        RETURN QUERY
        WITH candidates AS (
            SELECT c.tid, c.id, c.priority
            FROM unnest(p_entrypoints, v_allow, p_scan_from_priority, p_scan_from_id)
                AS w(ep, allow, from_priority, from_id),
            LATERAL (
                -- The ready jobs from the start: those of its priority from its id on, one range of the index.
                -- Without a start, all of them.
                SELECT s.tid, s.id, s.priority FROM (
                    -- The priority as two bounds, not an equality: with an equality the order asked for is the
                    -- id alone, which the primary key gives too, and a plan that reads it from the start's id
                    -- reads every later job of the table, other entrypoints' included. Two inclusive bounds
                    -- still let the ready index start at (entrypoint, priority, id).
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'queued'
                      AND j.priority <= COALESCE(w.from_priority, 2147483647)
                      AND j.priority >= COALESCE(w.from_priority, -2147483648)
                      AND j.id >= COALESCE(w.from_id, 0)
                    ORDER BY j.priority DESC, j.id
                    LIMIT w.allow
                    FOR UPDATE SKIP LOCKED
                ) AS s
                UNION ALL
                SELECT d.tid, d.id, d.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                    ORDER BY j.execute_after
                    LIMIT w.allow
                    FOR UPDATE SKIP LOCKED
                ) AS d
                ORDER BY 3 DESC, 2
                LIMIT w.allow
            ) AS c
            WHERE w.allow > 0
            ORDER BY c.priority DESC, c.id
            LIMIT p_batch
        ),
        claimed AS (
            UPDATE {jobs} AS j
            SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
                isolated = false, max_deaths = NULL, hold_failures = false
            WHERE j.ctid = ANY (ARRAY(SELECT c.tid FROM candidates AS c))
            RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                      j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
        )
        SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c ORDER BY c.priority DESC, c.id;
    ELSE
        -- From the starts of several entrypoints, with a big batch: each entrypoint locks only its share of it.
        -- The statement above locks up to a batch of every entrypoint, to merge them and keep the first batch.
        -- Here the merge comes first, on the same reads without locks (``shares``: how many of the first p_batch
        -- jobs by priority and id are each entrypoint's), and each entrypoint then locks that many of its jobs from
        -- the same start. Jobs another claim holds are skipped as before, and the next ones of the same entrypoint
        -- taken in their place; should an entrypoint run out of them, the claim comes back short and the worker
        -- completes it with a whole read (PostgresBackend.claim).
        RETURN QUERY
        WITH shares AS (
            SELECT f.ep, f.from_priority, f.from_id, count(*)::integer AS take
            FROM (
                SELECT w.ep, w.from_priority, w.from_id
                FROM unnest(p_entrypoints, v_allow, p_scan_from_priority, p_scan_from_id)
                    AS w(ep, allow, from_priority, from_id),
                LATERAL (
                    SELECT s.id, s.priority FROM (
                        SELECT j.id, j.priority FROM {jobs} AS j
                        WHERE j.entrypoint = w.ep AND j.status = 'queued'
                          AND j.priority <= COALESCE(w.from_priority, 2147483647)
                          AND j.priority >= COALESCE(w.from_priority, -2147483648)
                          AND j.id >= COALESCE(w.from_id, 0)
                        ORDER BY j.priority DESC, j.id
                        LIMIT w.allow
                    ) AS s
                    UNION ALL
                    SELECT d.id, d.priority FROM (
                        SELECT j.id, j.priority FROM {jobs} AS j
                        WHERE j.entrypoint = w.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                        ORDER BY j.execute_after
                        LIMIT w.allow
                    ) AS d
                    ORDER BY 2 DESC, 1
                    LIMIT w.allow
                ) AS c
                WHERE w.allow > 0
                ORDER BY c.priority DESC, c.id
                LIMIT p_batch
            ) AS f
            GROUP BY f.ep, f.from_priority, f.from_id
        ),
        candidates AS (
            SELECT c.tid, c.id, c.priority
            FROM shares AS w,
            LATERAL (
                SELECT s.tid, s.id, s.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'queued'
                      AND j.priority <= COALESCE(w.from_priority, 2147483647)
                      AND j.priority >= COALESCE(w.from_priority, -2147483648)
                      AND j.id >= COALESCE(w.from_id, 0)
                    ORDER BY j.priority DESC, j.id
                    LIMIT w.take
                    FOR UPDATE SKIP LOCKED
                ) AS s
                UNION ALL
                SELECT d.tid, d.id, d.priority FROM (
                    SELECT j.ctid AS tid, j.id, j.priority FROM {jobs} AS j
                    WHERE j.entrypoint = w.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                    ORDER BY j.execute_after
                    LIMIT w.take
                    FOR UPDATE SKIP LOCKED
                ) AS d
                ORDER BY 3 DESC, 2
                LIMIT w.take
            ) AS c
        ),
        claimed AS (
            UPDATE {jobs} AS j
            SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
                isolated = false, max_deaths = NULL, hold_failures = false
            WHERE j.ctid = ANY (ARRAY(SELECT c.tid FROM candidates AS c))
            RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                      j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
        )
        SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c ORDER BY c.priority DESC, c.id;
    END IF;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;

    IF v_limited THEN
        -- What this claim took of each limited entrypoint it was allowed some of: its own jobs picked at v_now,
        -- which the claim above wrote in this transaction. The tokens it spent, and the hints about limits.
        RETURN QUERY
        WITH limited AS (
            SELECT u.ep, u.conc, u.rate, u.allow, u.tokens,
                   COALESCE(u.ep = ANY (v_held), false) AS held,
                   COALESCE(u.ep = ANY (v_with_work), false) AS with_work,
                   CASE WHEN u.allow > 0 THEN (
                       SELECT count(*) FROM {jobs} AS j
                       WHERE j.status = 'picked' AND j.worker_id = p_worker_id AND j.entrypoint = u.ep
                         AND j.picked_at = v_now
                   )::integer ELSE 0 END AS n
            FROM unnest(p_entrypoints, p_concurrency, p_rate, v_allow, v_tokens) AS u(ep, conc, rate, allow, tokens)
            WHERE u.conc > 0 OR u.rate > 0
        ),
        spent AS (
            UPDATE {entrypoint_limits} AS l
            SET tokens = w.tokens - w.n, refilled_at = v_now
            FROM limited AS w
            WHERE l.entrypoint = w.ep AND w.rate > 0 AND w.n > 0
            RETURNING 1
        )
        SELECT NULL::bigint, w.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
               NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               CASE WHEN NOT w.held
                    -- With work, but another claim held its row: look again in a moment (it holds the row for the
                    -- length of one claim).
                    THEN 0.005::double precision
                    -- Rate-limited and left with less than a token, and may have more work (this claim took all
                    -- it was allowed): when the next token is.
                    ELSE (1 - (w.tokens - w.n)) / w.rate
               END,
               'throttled'::text
        FROM limited AS w
        WHERE w.with_work AND (NOT w.held OR (w.rate > 0 AND w.tokens - w.n < 1 AND w.n >= w.allow))
        UNION ALL
        -- Limited entrypoints this claim could take nothing of, for a reason that lasts until a notification names
        -- them or a moment passes: no claimable work, a full concurrency limit, or a full batch of jobs that come
        -- before all of its own (by priority and id, which a moment does not change while the backlog drains). And
        -- a concurrency-limited one whose last free places this claim just took: the next claim would find its
        -- limit full, so it waits for the 'slot' notice as well. A worker that asks for these (p_report_closed)
        -- leaves them out of its next claims until then (pgqd/worker/limit_gates.py). The tenth column
        -- (cancel_requested, NULL in every other hint) says whether its concurrency limit is reached: then more
        -- jobs enqueued do not open it, a freed slot does.
        SELECT NULL::bigint, w.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
               NULL::timestamptz, NULL::timestamptz,
               w.conc > 0 AND CASE WHEN w.n > 0 THEN w.rate <= 0
                                   WHEN w.allow = 0 THEN w.with_work AND w.held AND NOT (w.rate > 0 AND w.tokens < 1)
                                   ELSE false
                              END,
               NULL::integer, NULL::double precision, 'closed'::text
        FROM limited AS w
        WHERE p_report_closed
          AND CASE WHEN w.n > 0
                   -- Fewer than a batch allowed, and not for want of tokens: the concurrency limit set it.
                   THEN w.conc > 0 AND w.rate <= 0 AND w.allow < p_batch AND w.n >= w.allow
                   WHEN w.allow = 0
                   THEN NOT w.with_work OR (w.held AND NOT (w.rate > 0 AND w.tokens < 1))
                   ELSE v_claimed >= p_batch
              END;
    END IF;

    -- The hints of a claim that came back short, or of an isolated one: the next deferred job not yet due, and
    -- whether suspects wait. A full claim does not look: no cost on a deep queue (the heartbeat tells busy
    -- workers). This statement's snapshot sees the suspect an isolated claim took as picked.
    IF v_claimed < p_batch OR p_isolated THEN
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
        WHERE v_claimed < p_batch
        HAVING min(n.execute_after) IS NOT NULL
        UNION ALL
        SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
               NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               NULL::double precision, 'suspects'::text
        WHERE (p_isolated OR (p_isolated IS NOT NULL AND v_claimed < p_batch))
          AND EXISTS (SELECT 1 FROM {jobs} AS j
                      WHERE j.status = 'suspect' AND j.entrypoint = ANY (p_entrypoints));
    END IF;
END;
$$;
