-- pgqd schema version 11: the log is partitioned by the day its jobs finished (UTC days).
--
-- Retention drops a whole day's partition (no row deletes, no dead tuples, no vacuum to chase), and the
-- queries that ask for a time range (the overview's chart, recent failures, a job search over a day) read only
-- the partitions of that range, each through a B-tree on finished_at that stays selective whatever was deleted.
--
-- Partitions are created days ahead by the lead worker of a daemon (pgqd/daemon/log_partitions.py), never on
-- the hot path; a DEFAULT partition takes any row no partition covers, so an outcome is never refused, and
-- the same duty moves such rows into a partition of their own later. The outcome statements are unchanged:
-- they insert into the parent, and PostgreSQL routes each row.
--
-- Upgrading keeps the rows of the unpartitioned log where they are: the old table becomes one partition, for
-- every time before the upgrade, dropped whole once retention has passed it. Steps, each committed on its own:
--   1. the old table is renamed {prefix}log_legacy and the partitioned log takes its name, with partitions
--      from now on (a short exclusive lock on the old table: outcome writes wait for milliseconds);
--   2. a CHECK constraint proves that no old row is newer than the first partition (one scan of the old table,
--      which nobody writes any more, so nothing waits for it; its rows are missing from reads meanwhile);
--   3. the old table is attached as the partition of everything before the upgrade, with no scan (the
--      constraint proves it), after moving into it the few late rows that fell into the default partition.
-- Daemons of the previous version keep working all along: they insert into, read and prune (row by row) the
-- table called {log}, which is now the parent. docs/operations.md ("The log's partitions") has the procedure.

-- Every partition of the log with its bounds (-infinity / infinity for MINVALUE / MAXVALUE; NULL for the
-- default partition). PostgreSQL shows bounds only as text: with the time zone pinned to UTC it is one format.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_partitions"()
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE SET timezone = 'UTC' SET datestyle = 'ISO, YMD' AS $$
    SELECT c.oid::regclass,
           CASE b.m[1] WHEN 'MINVALUE' THEN '-infinity' WHEN 'MAXVALUE' THEN 'infinity'
                ELSE btrim(b.m[1], '''') END::timestamptz,
           CASE b.m[2] WHEN 'MINVALUE' THEN '-infinity' WHEN 'MAXVALUE' THEN 'infinity'
                ELSE btrim(b.m[2], '''') END::timestamptz
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid,
    LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS m) AS b
    WHERE i.inhparent = to_regclass('{schema}."{prefix}log"')
    ORDER BY 2 NULLS FIRST
$$;

-- Creates the partition for [p_from, p_to) and returns its name. The table is built on its own and then
-- attached: CREATE TABLE ... PARTITION OF would lock the whole log exclusively, while ATTACH lets outcome
-- writes and reads go on. Rows of the range already in the default partition (written while no partition
-- covered them) move into the new one first; only then are new outcome writes held (by a lock on the parent
-- that waits for nothing but other DDL), for as long as that move takes, so that none of them is routed to
-- the default partition while its range shrinks (PostgreSQL would refuse such a row).
-- Runs with its owner's rights, so a worker role without DDL rights (pgqd grants) may call it.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_add_partition"(p_from timestamptz, p_to timestamptz)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    v_name text := '{prefix}log_' || to_char(p_from, 'YYYYMMDD')
                   || CASE WHEN p_from = date_trunc('day', p_from) THEN '' ELSE to_char(p_from, '"_"HH24MISS') END;
    v_table text;
    v_moved bigint;
BEGIN
    IF NOT (p_from < p_to) THEN
        RAISE EXCEPTION 'pgqd: empty partition range [%, %)', p_from, p_to;
    END IF;
    v_table := format('{schema}.%I', v_name);
    EXECUTE format(
        'CREATE TABLE %s (LIKE {log} INCLUDING DEFAULTS INCLUDING STORAGE) WITH ('
        -- Written once, never updated: vacuum early for the visibility map (index-only reads) and freezing.
        'autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02)', v_table);
    IF EXISTS (SELECT 1 FROM {schema}."{prefix}log_default" AS d
               WHERE d.finished_at >= p_from AND d.finished_at < p_to) THEN
        LOCK TABLE {schema}."{prefix}log" IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format(
            'WITH moved AS (DELETE FROM {schema}."{prefix}log_default" AS d
                            WHERE d.finished_at >= $1 AND d.finished_at < $2 RETURNING d.*)
             INSERT INTO %s SELECT * FROM moved', v_table) USING p_from, p_to;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        RAISE NOTICE 'pgqd: moved % rows from the default partition into %', v_moved, v_name;
    END IF;
    -- A job is logged once (the old primary key); finished_at serves every time range, in any physical order.
    EXECUTE format('CREATE UNIQUE INDEX ON %s (job_id)', v_table);
    EXECUTE format('CREATE INDEX ON %s (finished_at)', v_table);
    EXECUTE format('ALTER TABLE {schema}."{prefix}log" ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                   v_table, p_from, p_to);
    RETURN v_name;
END;
$$;

-- Takes out of the log one partition whose every row finished before p_finished_before (never a later one, nor
-- the default partition), and returns the rows it held (the planner's estimate: counting would read them). It
-- is detached and renamed {prefix}log_x..., and log_drop_detached drops it in a transaction of its own: a DROP
-- holds its locks until the file system has freed the table's files (half a second for a day of 12 million
-- rows), and outcome writes wait for the lock on the parent; a DETACH holds it for a catalogue change only.
-- workflows: once jobs can wait for others, a partition holding a log row of a workflow with a step still
-- live must not go (a workflow is pruned only when every step has ended); the duty that calls this keeps such
-- partitions (droppable() in pgqd/daemon/log_partitions.py).
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_drop_partition"(p_partition regclass, p_finished_before timestamptz)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_upper timestamptz;
    v_rows bigint;
    v_detached text;
BEGIN
    SELECT p.upper_bound INTO v_upper FROM {schema}."{prefix}log_partitions"() AS p WHERE p.partition = p_partition;
    IF v_upper IS NULL OR v_upper > p_finished_before OR p_finished_before > now() THEN
        RAISE EXCEPTION 'pgqd: % is not a partition of the log that ended before %', p_partition, p_finished_before;
    END IF;
    SELECT greatest(c.reltuples, 0)::bigint, '{prefix}log_x' || substr(c.relname, length('{prefix}log_') + 1)
    INTO v_rows, v_detached FROM pg_class AS c WHERE c.oid = p_partition;
    EXECUTE format('ALTER TABLE {log} DETACH PARTITION %s', p_partition);
    EXECUTE format('ALTER TABLE %s RENAME TO %I', p_partition, v_detached);
    RETURN v_rows;
END;
$$;

-- Drops the partitions log_drop_partition took out (and any it left behind); returns how many.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_drop_detached"()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_table regclass;
    v_dropped integer := 0;
BEGIN
    FOR v_table IN
        SELECT c.oid::regclass FROM pg_class AS c
        WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
          AND left(c.relname, length('{prefix}log_x')) = '{prefix}log_x'
    LOOP
        EXECUTE format('DROP TABLE %s', v_table);
        v_dropped := v_dropped + 1;
    END LOOP;
    RETURN v_dropped;
END;
$$;

-- Step 1: the partitioned log takes the old table's name. Skipped when done already (a re-run after a later
-- step failed). LIKE copies every column the log has by now, whatever migrations added them.
DO $$
DECLARE
    v_start timestamptz;
    v_day timestamptz;
BEGIN
    IF (SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass('{schema}."{prefix}log"')) = 'p' THEN
        RETURN;
    END IF;
    -- The partitions start when no outcome write can reach the old table any more; with no old rows to keep
    -- (a new install), at the start of the day.
    LOCK TABLE {log} IN ACCESS EXCLUSIVE MODE;
    v_start := clock_timestamp();
    v_day := date_trunc('day', v_start, 'UTC');
    IF NOT EXISTS (SELECT 1 FROM {log}) THEN
        v_start := v_day;
    END IF;
    ALTER TABLE {log} RENAME TO "{prefix}log_legacy";
    CREATE TABLE {log} (LIKE {schema}."{prefix}log_legacy" INCLUDING DEFAULTS INCLUDING STORAGE)
        PARTITION BY RANGE (finished_at);
    CREATE TABLE {schema}."{prefix}log_default" PARTITION OF {log} DEFAULT;
    CREATE UNIQUE INDEX ON {schema}."{prefix}log_default" (job_id);
    CREATE INDEX ON {schema}."{prefix}log_default" (finished_at);
    -- From then to the end of today, then three whole days: the lead worker keeps days ahead from here on.
    PERFORM {schema}."{prefix}log_add_partition"(v_start, v_day + interval '1 day');
    FOR i IN 1 .. 3 LOOP
        PERFORM {schema}."{prefix}log_add_partition"(v_day + i * interval '1 day', v_day + (i + 1) * interval '1 day');
    END LOOP;
END;
$$;

-- The days (UTC) of the rows in the default partition, with how many each. Normally there are none: a row
-- lands there only when no partition covers its time (the lead worker did not run for days, or a clock far off).
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_default_days"()
RETURNS TABLE (day timestamptz, rows bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT date_trunc('day', d.finished_at, 'UTC'), count(*)
    FROM {schema}."{prefix}log_default" AS d GROUP BY 1 ORDER BY 1
$$;

-- Deletes up to p_limit rows of the default partition that finished before p_finished_before (rows past
-- retention for which no partition was ever created); returns how many.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_prune_default"(p_finished_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM {schema}."{prefix}log_default" AS d
        WHERE d.ctid = ANY (ARRAY(SELECT x.ctid FROM {schema}."{prefix}log_default" AS x
                                  WHERE x.finished_at < p_finished_before LIMIT p_limit))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_add_partition"(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_drop_partition"(regclass, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_drop_detached"() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_default_days"() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_prune_default"(timestamptz, integer) FROM PUBLIC;

-- Finished jobs per minute and entrypoint, for the overview's chart: its cost then follows the minutes shown,
-- not the rows (at 1,000 jobs/s an hour is 3.6 million rows). Not kept on the hot path, where one row per
-- minute updated by every flush would make every worker wait for the others: the lead worker counts each minute
-- once it has settled, from the log's B-tree on finished_at. The chart adds the rows of the minutes since.
CREATE TABLE IF NOT EXISTS {schema}."{prefix}log_minutes" (
    minute     timestamptz NOT NULL,
    entrypoint text NOT NULL,
    succeeded  integer NOT NULL,
    failed     integer NOT NULL,  -- exception or timeout
    other      integer NOT NULL,  -- canceled or deleted
    PRIMARY KEY (minute, entrypoint)
);

-- The minutes counted: [rolled_from, rolled_until). One row, written by the lead worker once per round.
CREATE TABLE IF NOT EXISTS {schema}."{prefix}log_minutes_rolled" (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    rolled_from   timestamptz NOT NULL,
    rolled_until  timestamptz NOT NULL
);
INSERT INTO {schema}."{prefix}log_minutes_rolled" (rolled_from, rolled_until)
VALUES (date_trunc('minute', now()), date_trunc('minute', now()))
ON CONFLICT DO NOTHING;

-- Counts up to p_max_minutes minutes after the last one counted and older than p_settle (an outcome is written
-- milliseconds after its job finished; one written later than p_settle, after a long outage, is in the log
-- but not in the chart), and forgets minutes older than p_keep (NULL: none). Returns the minutes counted.
CREATE OR REPLACE FUNCTION {schema}."{prefix}log_roll_minutes"(p_settle interval, p_max_minutes integer,
                                                              p_keep interval)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_from timestamptz;
    v_to timestamptz;
BEGIN
    SELECT r.rolled_until INTO v_from FROM {schema}."{prefix}log_minutes_rolled" AS r FOR UPDATE;
    v_to := least(date_trunc('minute', now() - p_settle), v_from + p_max_minutes * interval '1 minute');
    IF v_to > v_from THEN
        INSERT INTO {schema}."{prefix}log_minutes" (minute, entrypoint, succeeded, failed, other)
        SELECT date_trunc('minute', l.finished_at), l.entrypoint,
               count(*) FILTER (WHERE l.status = 'successful'),
               count(*) FILTER (WHERE l.status IN ('exception', 'timeout')),
               count(*) FILTER (WHERE l.status NOT IN ('successful', 'exception', 'timeout'))
        FROM {log} AS l
        WHERE l.finished_at >= v_from AND l.finished_at < v_to
        GROUP BY 1, 2
        ON CONFLICT DO NOTHING;
        UPDATE {schema}."{prefix}log_minutes_rolled" SET rolled_until = v_to;
    END IF;
    IF p_keep IS NOT NULL THEN
        DELETE FROM {schema}."{prefix}log_minutes" AS m WHERE m.minute < now() - p_keep;
        UPDATE {schema}."{prefix}log_minutes_rolled"
        SET rolled_from = least(rolled_until, greatest(rolled_from, date_trunc('minute', now() - p_keep)));
    END IF;
    RETURN greatest(extract(epoch FROM v_to - v_from) / 60, 0)::integer;
END;
$$;
REVOKE EXECUTE ON FUNCTION {schema}."{prefix}log_roll_minutes"(interval, integer, interval) FROM PUBLIC;

-- pgqd: commit

-- Step 2: prove every old row older than the first partition, with one scan of the old table that holds a lock
-- on it alone (nobody writes it any more). A row that a worker's clock dated later (by milliseconds) moves on
-- into the partitioned log first.
DO $$
DECLARE
    v_start timestamptz;
BEGIN
    IF to_regclass('{schema}."{prefix}log_legacy"') IS NULL
       OR EXISTS (SELECT 1 FROM pg_constraint AS k
                  WHERE k.conrelid = to_regclass('{schema}."{prefix}log_legacy"')
                    AND k.conname = '{prefix}log_legacy_range') THEN
        RETURN;
    END IF;
    SELECT min(p.lower_bound) INTO v_start FROM {schema}."{prefix}log_partitions"() AS p;
    WITH moved AS (DELETE FROM {schema}."{prefix}log_legacy" AS o WHERE o.finished_at >= v_start RETURNING o.*)
    INSERT INTO {log} SELECT * FROM moved;
    EXECUTE format('ALTER TABLE {schema}."{prefix}log_legacy" ADD CONSTRAINT "{prefix}log_legacy_range"'
                   ' CHECK (finished_at < %L)', v_start);
END;
$$;

-- pgqd: commit

-- Step 3: the old table becomes the partition of everything before the first partition (or goes, if empty).
-- Outcome writes wait while the late rows move: milliseconds, there are a handful at most.
DO $$
DECLARE
    v_start timestamptz;
BEGIN
    IF to_regclass('{schema}."{prefix}log_legacy"') IS NULL THEN
        RETURN;
    END IF;
    LOCK TABLE {log} IN SHARE ROW EXCLUSIVE MODE;
    SELECT min(p.lower_bound) INTO v_start FROM {schema}."{prefix}log_partitions"() AS p;
    WITH moved AS (DELETE FROM {schema}."{prefix}log_default" AS d WHERE d.finished_at < v_start RETURNING d.*)
    INSERT INTO {schema}."{prefix}log_legacy" SELECT * FROM moved;
    IF NOT EXISTS (SELECT 1 FROM {schema}."{prefix}log_legacy") THEN
        DROP TABLE {schema}."{prefix}log_legacy";
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE {log} ATTACH PARTITION {schema}."{prefix}log_legacy" FOR VALUES FROM (MINVALUE) TO (%L)',
                   v_start);
END;
$$;
