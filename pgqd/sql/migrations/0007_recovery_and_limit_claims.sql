-- pgqd schema version 7: a dead worker's jobs run again at once, and limits that never serialize the claim.
--
-- Recovery. The jobs a dead worker held go back to the queue at once, to be claimed in parallel by anyone, like
-- any rescued job: most deaths (the OOM killer, a drained node, kill -9) are nobody's fault. Each job counts the
-- deaths it was present in (deaths). A job present in a second death is a suspect: it runs alone in its process,
-- so that its own death is charged to it alone. Suspects run in parallel across processes, one per process. A
-- job is given up for killing its worker only once it died alone max_deaths times (the entrypoint's
-- max_worker_deaths, stamped by the claim that takes it to run alone). Deaths never spend retry attempts.
--
-- Limits. The claim touches a limited entrypoint's row in entrypoint_limits only when that entrypoint has
-- claimable work, and takes it with SKIP LOCKED: while one claimer holds it, the others claim every other
-- entrypoint and come back for this one a moment later. Claims of unlimited entrypoints never wait on a limit.

ALTER TABLE {jobs}
    -- Worker deaths this job was present in (any death, alone or not); reset by a requeue.
    ADD COLUMN deaths integer NOT NULL DEFAULT 0,
    -- The entrypoint's max_worker_deaths, stamped by the claim that takes a suspect to run alone.
    ADD COLUMN max_deaths integer;

COMMENT ON COLUMN {jobs}.lost_runs IS 'deaths of a worker charged to this job (it ran alone and its worker died)';
COMMENT ON COLUMN {jobs}.max_attempts IS 'unused since version 7 (stamped by daemons of versions 3 to 6)';

-- The claim has the contract of version 6 (the columns it returns, what a hint row means), with two changes:
-- suspects are claimed to run alone by any number of workers at once (one each), and limited entrypoints are
-- read as the header above says. New parameter p_max_deaths[i]: entrypoint i's max_worker_deaths, stamped on a
-- suspect claimed to run alone. Rows come back in two kinds (PostgresBackend.claim and CLAIM_JOBS read them):
-- a claimed job (hint IS NULL), or a hint: 'throttled' (an entrypoint with waiting jobs has a token, or its
-- limit row is free, in wake_in seconds), 'due' (the next deferred job is due in wake_in seconds) or 'suspects'
-- (suspects of these entrypoints wait to run alone).
DROP FUNCTION {claim_jobs}(bigint, integer, text[], integer[], double precision[], double precision[], boolean,
                           integer[], boolean[]);

CREATE FUNCTION {claim_jobs}(
    p_worker_id bigint,
    p_batch integer,
    p_entrypoints text[],
    p_concurrency integer[],
    p_rate double precision[],
    p_burst double precision[],
    p_isolated boolean DEFAULT NULL,
    p_max_attempts integer[] DEFAULT NULL,
    p_hold boolean[] DEFAULT NULL,
    p_max_deaths integer[] DEFAULT NULL
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
    v_with_work text[];  -- limited entrypoints with claimable work: the only limit rows this claim reads
    v_held text[];       -- those of them whose limit row this claim holds
    v_claimed integer;
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
    END IF;

    -- A limited entrypoint's limit row is read only when it has claimable work: one ordered probe of its partial
    -- index (ready and due, or suspects for an isolated claim). Nothing queued for it: nothing to lock.
    SELECT array_agg(u.ep ORDER BY u.ep) INTO v_with_work
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
          END;

    IF v_with_work IS NULL THEN
        -- Limited entrypoints without work are asked for nothing.
        SELECT array_agg(CASE WHEN u.conc > 0 OR u.rate > 0 THEN 0 ELSE p_batch END ORDER BY u.ord) INTO v_allow
        FROM unnest(p_entrypoints, p_concurrency, p_rate) WITH ORDINALITY AS u(ep, conc, rate, ord);
    ELSE
        -- The first claim ever of an entrypoint creates its row; later claims skip this insert's conflict check.
        INSERT INTO {entrypoint_limits} AS l (entrypoint, tokens, refilled_at)
        SELECT u.ep, u.burst, v_now
        FROM unnest(p_entrypoints, p_burst) AS u(ep, burst)
        WHERE u.ep = ANY (v_with_work)
          AND NOT EXISTS (SELECT 1 FROM {entrypoint_limits} AS e WHERE e.entrypoint = u.ep)
        ON CONFLICT DO NOTHING;

        -- One claimer at a time per limited entrypoint, and the others do not wait: they claim everything else
        -- and are told (a 'throttled' hint below) to come back for this one in a moment.
        SELECT array_agg(h.entrypoint) INTO v_held
        FROM (
            SELECT l.entrypoint FROM {entrypoint_limits} AS l
            WHERE l.entrypoint = ANY (v_with_work)
            ORDER BY l.entrypoint
            FOR UPDATE SKIP LOCKED
        ) AS h;

        -- Counted in a statement after the lock, so on a snapshot that sees every claim that held it before:
        -- with the row held, nobody else can add a running job of this entrypoint until this claim commits.
        v_now := clock_timestamp();
        SELECT array_agg(
            CASE
                WHEN u.conc <= 0 AND u.rate <= 0 THEN p_batch
                WHEN NOT COALESCE(u.ep = ANY (v_held), false) THEN 0
                ELSE LEAST(
                    p_batch,
                    CASE WHEN u.conc > 0 THEN GREATEST(u.conc - (
                        SELECT count(*) FROM {jobs} AS j WHERE j.status = 'picked' AND j.entrypoint = u.ep
                    ), 0)::integer ELSE p_batch END,
                    CASE WHEN u.rate > 0 THEN floor(LEAST(
                        u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at)
                    ))::integer ELSE p_batch END
                )
            END
            ORDER BY u.ord
        ) INTO v_allow
        FROM unnest(p_entrypoints, p_concurrency, p_rate, p_burst) WITH ORDINALITY AS u(ep, conc, rate, burst, ord)
        LEFT JOIN {entrypoint_limits} AS l ON l.entrypoint = u.ep AND u.ep = ANY (v_held);
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

    IF v_with_work IS NOT NULL THEN
        -- Entrypoints with work that another claimer held: look again in a moment (it holds the row for the
        -- length of one claim). Those this claim held: when a rate limit held jobs back, when the next token is.
        RETURN QUERY
        SELECT NULL::bigint, u.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
               NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               0.005::double precision, 'throttled'::text
        FROM unnest(v_with_work) AS u(ep)
        WHERE NOT COALESCE(u.ep = ANY (v_held), false)
        UNION ALL
        SELECT NULL::bigint, u.ep, NULL::bytea, NULL::text, NULL::integer, NULL::integer, NULL::timestamptz,
               NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               (1 - t.tokens) / u.rate, 'throttled'::text
        FROM unnest(p_entrypoints, p_rate, p_burst) AS u(ep, rate, burst)
        JOIN {entrypoint_limits} AS l ON l.entrypoint = u.ep,
        LATERAL (SELECT LEAST(u.burst, l.tokens + u.rate * extract(epoch FROM v_now - l.refilled_at)) AS tokens) AS t
        WHERE u.rate > 0 AND u.ep = ANY (v_held) AND t.tokens < 1
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

    -- A claim that came back short says whether suspects wait; an isolated claim says whether more wait. A full
    -- claim does not look: no cost on a deep queue (the heartbeat tells busy workers).
    IF p_isolated OR (p_isolated IS NOT NULL AND v_claimed < p_batch) THEN
        RETURN QUERY
        SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::text, NULL::integer, NULL::integer,
               NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::integer,
               NULL::double precision, 'suspects'::text
        WHERE EXISTS (SELECT 1 FROM {jobs} AS j WHERE j.status = 'suspect' AND j.entrypoint = ANY (p_entrypoints));
    END IF;
END;
$$;
