-- pgqd schema version 6: the claim updates the rows it locked by their place in the table, not by id.
--
-- A row locked by the claim's FOR UPDATE cannot change until the claim's transaction ends, so the version it
-- locked (whose ctid the candidates carry) is the one the UPDATE finds: a TID scan, instead of a look-up in
-- the primary key per claimed job (3 index pages each). Everything else is the claim of version 3, unchanged.

CREATE OR REPLACE FUNCTION {claim_jobs}(
    p_worker_id bigint,
    p_batch integer,
    p_entrypoints text[],
    p_concurrency integer[],
    p_rate double precision[],
    p_burst double precision[],
    p_isolated boolean DEFAULT NULL,
    p_max_attempts integer[] DEFAULT NULL,
    p_hold boolean[] DEFAULT NULL
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
    v_now timestamptz := clock_timestamp();
    v_allow integer[];
    v_limited text[];
    v_claimed integer;
BEGIN
    -- Paused entrypoints are dropped from the request before anything else, so they are neither claimed nor
    -- named in wake-up hints. The flag is read here, in the claim itself, so a worker that missed a notification
    -- still cannot claim a paused entrypoint. With nothing paused (no row) this is one look at an empty table.
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

    -- quarantine: claimers of suspects take turns, and the check runs on a snapshot taken after the lock, so
    -- two workers never run suspects alone at the same time.
    IF p_isolated THEN
        PERFORM pg_advisory_xact_lock(hashtext('{claim_jobs}:isolated'));
        IF EXISTS (SELECT 1 FROM {jobs} AS j WHERE j.isolated AND j.status = 'picked') THEN
            RETURN;
        END IF;
        p_batch := 1;
    END IF;

    SELECT array_agg(u.ep ORDER BY u.ep) INTO v_limited
    FROM unnest(p_entrypoints, p_concurrency, p_rate) AS u(ep, conc, rate)
    WHERE u.conc > 0 OR u.rate > 0;

    IF v_limited IS NULL THEN
        v_allow := array_fill(p_batch, ARRAY[cardinality(p_entrypoints)]);
    ELSE
        INSERT INTO {entrypoint_limits} AS l (entrypoint, tokens, refilled_at)
        SELECT u.ep, u.burst, v_now
        FROM unnest(p_entrypoints, p_rate, p_burst) AS u(ep, rate, burst)
        WHERE u.ep = ANY (v_limited)
        ON CONFLICT DO NOTHING;

        PERFORM 1 FROM {entrypoint_limits} AS l
        WHERE l.entrypoint = ANY (v_limited)
        ORDER BY l.entrypoint
        FOR UPDATE;

        v_now := clock_timestamp();
        SELECT array_agg(
            LEAST(
                p_batch,
                CASE WHEN u.conc > 0 THEN GREATEST(u.conc - (
                    SELECT count(*) FROM {jobs} AS j WHERE j.status = 'picked' AND j.entrypoint = u.ep
                ), 0)::integer ELSE p_batch END,
                CASE WHEN u.rate > 0 THEN floor(LEAST(
                    u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at)
                ))::integer ELSE p_batch END
            )
            ORDER BY u.ord
        ) INTO v_allow
        FROM unnest(p_entrypoints, p_concurrency, p_rate, p_burst) WITH ORDINALITY AS u(ep, conc, rate, burst, ord)
        LEFT JOIN {entrypoint_limits} AS l ON l.entrypoint = u.ep;
    END IF;

    RETURN QUERY
    WITH wanted AS (
        SELECT u.ep, u.allow
        FROM unnest(p_entrypoints, v_allow) AS u(ep, allow)
        WHERE u.allow > 0
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
            -- quarantine: an isolated claim reads the suspects and nothing else.
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
        ORDER BY c.priority DESC, c.id
        LIMIT p_batch
    ),
    claimed AS (
        UPDATE {jobs} AS j
        SET status = 'picked', picked_at = v_now, worker_id = p_worker_id, attempts = j.attempts + 1,
            -- quarantine: an isolated claim stamps the run and the budget the rescue will judge it by.
            isolated = p_isolated IS TRUE,
            max_attempts = CASE WHEN p_isolated THEN p_max_attempts[array_position(p_entrypoints, j.entrypoint)] END,
            hold_failures = p_isolated IS TRUE AND p_hold[array_position(p_entrypoints, j.entrypoint)]
        FROM candidates AS c
        WHERE j.ctid = c.tid
        RETURNING j.id, j.entrypoint, j.payload, j.headers::text, j.priority, j.attempts, j.created_at,
                  j.execute_after, j.picked_at, j.cancel_requested, j.lost_runs
    ),
    spent AS (
        UPDATE {entrypoint_limits} AS l
        SET tokens = LEAST(u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at)) - n.taken,
            refilled_at = v_now
        FROM (SELECT c.entrypoint, count(*) AS taken FROM claimed AS c GROUP BY c.entrypoint) AS n,
             unnest(p_entrypoints, p_rate, p_burst) AS u(ep, rate, burst)
        WHERE l.entrypoint = n.entrypoint AND u.ep = n.entrypoint AND u.rate > 0
        RETURNING 1
    )
    SELECT c.*, NULL::double precision, NULL::text FROM claimed AS c;

    GET DIAGNOSTICS v_claimed = ROW_COUNT;

    IF v_limited IS NOT NULL THEN
        RETURN QUERY
        SELECT NULL::bigint, u.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
               NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               (1 - t.tokens) / u.rate, 'throttled'::text
        FROM unnest(p_entrypoints, p_rate, p_burst) AS u(ep, rate, burst)
        JOIN {entrypoint_limits} AS l ON l.entrypoint = u.ep,
        LATERAL (SELECT LEAST(u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at)) AS tokens) AS t
        WHERE u.rate > 0 AND t.tokens < 1
          -- One ordered probe per partial index. An EXISTS over both statuses can use neither index, and even
          -- one EXISTS per status is planned as a scan of the table (hoping to meet a matching row early).
          AND ((SELECT j.id FROM {jobs} AS j
                WHERE j.entrypoint = u.ep AND j.status = 'queued'
                ORDER BY j.priority DESC, j.id LIMIT 1) IS NOT NULL
               OR (SELECT j.id FROM {jobs} AS j
                   WHERE j.entrypoint = u.ep AND j.status = 'deferred' AND j.execute_after <= v_now
                   ORDER BY j.execute_after LIMIT 1) IS NOT NULL);
    END IF;

    IF v_claimed < p_batch THEN
        RETURN QUERY
        SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
               NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               GREATEST(extract(epoch FROM min(n.execute_after) - clock_timestamp()), 0)::double precision,
               'due'::text
        FROM unnest(p_entrypoints) AS u(ep),
        LATERAL (
            SELECT j.execute_after FROM {jobs} AS j
            WHERE j.entrypoint = u.ep AND j.status = 'deferred'
            ORDER BY j.execute_after
            LIMIT 1
        ) AS n
        HAVING min(n.execute_after) IS NOT NULL;
    END IF;

    -- quarantine: a claim that came back short says whether suspects wait (unless one runs alone already, as
    -- only one may); an isolated claim says whether more wait. A full claim does not look: no cost on a deep
    -- queue (the heartbeat tells busy workers).
    IF p_isolated OR (p_isolated IS NOT NULL AND v_claimed < p_batch) THEN
        RETURN QUERY
        SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
               NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               NULL::double precision, 'suspects'::text
        WHERE EXISTS (SELECT 1 FROM {jobs} AS j WHERE j.status = 'suspect' AND j.entrypoint = ANY (p_entrypoints))
          AND (p_isolated OR NOT EXISTS (SELECT 1 FROM {jobs} AS j WHERE j.isolated AND j.status = 'picked'));
    END IF;
END;
$$;
