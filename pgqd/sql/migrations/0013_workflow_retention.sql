-- pgqd schema version 13: retention that keeps a workflow's log rows while it has a step to run, and a sweep of
-- the workflow rows (edges, steps, workflows) whose jobs have left both the jobs table and the log.
--
-- A workflow's rows are pruned only once every step has ended (docs/workflows.md). The log is still dropped a
-- whole day at a time (migration 0011); the few rows of a day that belong to a workflow with a step still live
-- (a job still in the jobs table, whatever its status) move into the default partition as the day leaves, and
-- the workflow is noted in log_kept. The default partition is pruned row by row, and skips the rows of the
-- workflows noted there until the lead worker's round finds that their last step has ended.
--
-- Why move the rows rather than keep the day: a kept day would be kept whole (12 million rows at 140 jobs/s) for
-- as long as one workflow of it lives, and a workflow whose step is held for an operator may live for months.
-- Moved, only that workflow's own rows stay. The check reads live work, not history: the jobs table (those
-- older than the day) and the steps of the workflows found there, then the day's job-id index for those steps.
--
-- The sweep: edges and steps are removed by no statement of the hot path. A day that leaves the log, and the
-- rows pruned from the default partition, widen a range of job ids (log_sweep) that the lead worker then walks
-- a bounded batch at a time, through the primary key of workflow_steps and the child index of job_edges,
-- removing what belongs to jobs found neither in the jobs table nor in the log.

CREATE TABLE IF NOT EXISTS {schema}."{prefix}log_kept" (
    workflow_id bigint PRIMARY KEY,
    kept_at     timestamptz NOT NULL DEFAULT now()
);

-- Job ids [from_id, until_id] that may have lost their log rows, not swept yet (none when from_id > until_id).
CREATE TABLE IF NOT EXISTS {schema}."{prefix}log_sweep" (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    from_id  bigint NOT NULL,
    until_id bigint NOT NULL
);
-- An existing install has swept nothing yet: the days dropped before this version left their rows behind.
INSERT INTO {schema}."{prefix}log_sweep" (from_id, until_id)
SELECT 1, s.last_value FROM {jobs_id_seq} AS s
ON CONFLICT DO NOTHING;

-- As in migration 0011, plus the rows of workflows still live: read before the day is detached (the detach holds
-- the log to itself until this commits), moved into the default partition right after it. All the steps of a
-- workflow are enqueued by one statement, so they share its created_at, which no row of the workflow finished
-- before: a live step of a workflow with rows in this day was created before the day ended. A workflow never
-- gains a live step, so one found ended here stays ended.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_drop_partition"(p_partition regclass, p_finished_before timestamptz)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_upper timestamptz;
    v_rows bigint;
    v_detached text;
    v_live bigint[];
    v_kept bigint[];
    v_kept_workflows bigint[];
    v_low bigint;
    v_high bigint;
BEGIN
    SELECT p.upper_bound INTO v_upper FROM {schema}."{prefix}log_partitions"() AS p WHERE p.partition = p_partition;
    IF v_upper IS NULL OR v_upper > p_finished_before OR p_finished_before > now() THEN
        RAISE EXCEPTION 'pgqd: % is not a partition of the log that ended before %', p_partition, p_finished_before;
    END IF;
    SELECT greatest(c.reltuples, 0)::bigint, '{prefix}log_x' || substr(c.relname, length('{prefix}log_') + 1)
    INTO v_rows, v_detached FROM pg_class AS c WHERE c.oid = p_partition;

    SELECT array_agg(DISTINCT s.workflow_id) INTO v_live
    FROM {jobs} AS j JOIN {workflow_steps} AS s ON s.job_id = j.id
    WHERE j.created_at < v_upper;
    IF v_live IS NOT NULL THEN
        EXECUTE format('SELECT array_agg(p.job_id), array_agg(DISTINCT s.workflow_id)
                        FROM {workflow_steps} AS s JOIN %s AS p ON p.job_id = s.job_id
                        WHERE s.workflow_id = ANY ($1)', p_partition)
        INTO v_kept, v_kept_workflows USING v_live;
    END IF;
    -- Two ends of the job-id index: the ids whose edges and steps the sweep looks at next.
    EXECUTE format('SELECT min(p.job_id), max(p.job_id) FROM %s AS p', p_partition) INTO v_low, v_high;

    EXECUTE format('ALTER TABLE {log} DETACH PARTITION %s', p_partition);
    IF v_kept IS NOT NULL THEN
        -- No partition covers the day any more: the parent routes these rows to the default partition.
        EXECUTE format('INSERT INTO {log} SELECT * FROM %s AS p WHERE p.job_id = ANY ($1)', p_partition)
        USING v_kept;
        INSERT INTO {schema}."{prefix}log_kept" (workflow_id) SELECT unnest(v_kept_workflows)
        ON CONFLICT DO NOTHING;
    END IF;
    UPDATE {schema}."{prefix}log_sweep"
    SET from_id = least(from_id, v_low), until_id = greatest(until_id, v_high)
    WHERE v_low IS NOT NULL;
    EXECUTE format('ALTER TABLE %s RENAME TO %I', p_partition, v_detached);
    RETURN v_rows;
END;
$$;

-- Forgets the kept workflows whose every step has ended (their rows become prunable); returns how many. One
-- probe per kept workflow, as a subquery PostgreSQL runs per row: never a join over the jobs table.
CREATE FUNCTION {schema}."{prefix}log_release_kept"()
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH released AS (
        DELETE FROM {schema}."{prefix}log_kept" AS k
        WHERE (SELECT true FROM {workflow_steps} AS s JOIN {jobs} AS j ON j.id = s.job_id
               WHERE s.workflow_id = k.workflow_id LIMIT 1) IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM released
$$;

-- As in migration 0011, but the rows of kept workflows stay, and so do those of workflows this batch finds
-- still live (they are kept from now on, so that the next batches pass over them at two index probes a row).
-- Returns the rows the batch settled, deleted or kept: fewer than p_limit once none is left to settle. The
-- pruned rows' ids widen the sweep's range.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_prune_default"(p_finished_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH batch AS MATERIALIZED (
        SELECT d.ctid AS row_id, d.job_id, s.workflow_id
        FROM {schema}."{prefix}log_default" AS d
        LEFT JOIN LATERAL (SELECT s.workflow_id FROM {workflow_steps} AS s WHERE s.job_id = d.job_id LIMIT 1) AS s
            ON true
        WHERE d.finished_at < p_finished_before
          AND NOT EXISTS (SELECT 1 FROM {schema}."{prefix}log_kept" AS k WHERE k.workflow_id = s.workflow_id)
        LIMIT p_limit
    ),
    live AS MATERIALIZED (
        SELECT w.id FROM (SELECT DISTINCT b.workflow_id AS id FROM batch AS b WHERE b.workflow_id IS NOT NULL) AS w
        WHERE (SELECT true FROM {workflow_steps} AS s JOIN {jobs} AS j ON j.id = s.job_id
               WHERE s.workflow_id = w.id LIMIT 1)
    ),
    kept AS (
        INSERT INTO {schema}."{prefix}log_kept" (workflow_id) SELECT l.id FROM live AS l ON CONFLICT DO NOTHING
    ),
    gone AS (
        DELETE FROM {schema}."{prefix}log_default" AS d
        WHERE d.ctid = ANY (ARRAY(SELECT b.row_id FROM batch AS b
                                  WHERE b.workflow_id IS NULL OR b.workflow_id NOT IN (SELECT l.id FROM live AS l)))
        RETURNING d.job_id
    ),
    widened AS (
        UPDATE {schema}."{prefix}log_sweep" AS w
        SET from_id = least(w.from_id, r.low), until_id = greatest(w.until_id, r.high)
        FROM (SELECT min(g.job_id) AS low, max(g.job_id) AS high FROM gone AS g) AS r
        WHERE r.low IS NOT NULL
    )
    SELECT count(*)::integer FROM batch
$$;

-- Sweeps up to p_limit job ids of the range, the lowest first: those named by a step or as an edge's child (a
-- range scan of the primary key of workflow_steps and of the child index of job_edges). An id found neither in
-- the jobs table nor in the log loses its step and the edges into it (its parents' results, which only it
-- read), and a workflow left without steps goes. An edge into a live child, or into one still logged, stays.
-- Each lookup is a subquery PostgreSQL runs per id, an index probe in the jobs table and in each partition of
-- the log: never a join, which could read the whole log. Returns how many ids it looked at: fewer than p_limit
-- once the range is done.
--
-- An id never comes back: the outcome statements move a job from the jobs table to the log in one transaction,
-- and new steps and edges name new jobs only. So a step found orphaned by one statement is one for the next.
CREATE FUNCTION {schema}."{prefix}log_sweep_workflows"(p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_from bigint;
    v_until bigint;
    v_ids bigint[];
    v_gone bigint[];
    v_workflows bigint[];
BEGIN
    SELECT w.from_id, w.until_id INTO v_from, v_until FROM {schema}."{prefix}log_sweep" AS w FOR UPDATE;
    IF v_from IS NULL OR v_from > v_until THEN
        RETURN 0;
    END IF;
    SELECT array_agg(c.id ORDER BY c.id) INTO v_ids
    FROM (SELECT u.id
          FROM ((SELECT s.job_id AS id FROM {workflow_steps} AS s
                 WHERE s.job_id BETWEEN v_from AND v_until ORDER BY s.job_id LIMIT p_limit)
                UNION
                (SELECT DISTINCT e.child_id FROM {job_edges} AS e
                 WHERE e.child_id BETWEEN v_from AND v_until ORDER BY e.child_id LIMIT p_limit)) AS u
          ORDER BY u.id LIMIT p_limit) AS c;

    SELECT array_agg(c.id) INTO v_gone
    FROM unnest(v_ids) AS c(id)
    WHERE (SELECT true FROM {jobs} AS j WHERE j.id = c.id) IS NULL
      AND (SELECT true FROM {log} AS l WHERE l.job_id = c.id LIMIT 1) IS NULL;
    IF v_gone IS NOT NULL THEN
        DELETE FROM {job_edges} AS e WHERE e.child_id = ANY (v_gone);
        WITH steps AS (
            DELETE FROM {workflow_steps} AS s WHERE s.job_id = ANY (v_gone) RETURNING s.workflow_id
        )
        SELECT array_agg(DISTINCT s.workflow_id) INTO v_workflows FROM steps AS s;
        DELETE FROM {workflows} AS w
        WHERE w.id = ANY (v_workflows)
          AND NOT EXISTS (SELECT 1 FROM {workflow_steps} AS s WHERE s.workflow_id = w.id);
    END IF;

    UPDATE {schema}."{prefix}log_sweep"
    SET from_id = CASE WHEN COALESCE(cardinality(v_ids), 0) < p_limit THEN v_until ELSE v_ids[p_limit] END + 1;
    RETURN COALESCE(cardinality(v_ids), 0);
END;
$$;

REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_release_kept"() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_sweep_workflows"(integer) FROM PUBLIC;
