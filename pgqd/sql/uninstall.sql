-- Removes every object that pgqd migrations create (the schema itself is left in place).
-- Keep in step with migrations/: a test checks the catalogs are clean after uninstall.
DROP FUNCTION IF EXISTS {claim_jobs}(bigint, integer, text[], integer[], double precision[], double precision[]);
DROP FUNCTION IF EXISTS {claim_jobs}(
    bigint, integer, text[], integer[], double precision[], double precision[], boolean, integer[], boolean[]
);
DROP FUNCTION IF EXISTS {claim_jobs}(
    bigint, integer, text[], integer[], double precision[], double precision[], boolean, integer[], boolean[],
    integer[]
);
DROP FUNCTION IF EXISTS {claim_jobs}(
    bigint, integer, text[], integer[], double precision[], double precision[], boolean, integer[], boolean[],
    integer[], boolean
);
DROP FUNCTION IF EXISTS {claim_jobs}(
    bigint, integer, text[], integer[], double precision[], double precision[], boolean, integer[], boolean[],
    integer[], boolean, integer[], bigint[]
);
DROP FUNCTION IF EXISTS {enqueue_steps}(
    text[], bytea[], text[], integer[], double precision[], timestamptz[], text[], text[], text[], integer[], bigint[],
    boolean, text, text
);
DROP FUNCTION IF EXISTS {settle_children}(bigint[], text[], text[], bigint[], text);
DROP FUNCTION IF EXISTS {raise_dedupe_conflict}(text[]);
DROP FUNCTION IF EXISTS {notify_ids}(text, text, bigint[]);
DROP FUNCTION IF EXISTS {schema}."{prefix}log_add_partition"(timestamptz, timestamptz);
DROP FUNCTION IF EXISTS {schema}."{prefix}log_drop_partition"(regclass, timestamptz);
DROP FUNCTION IF EXISTS {schema}."{prefix}log_drop_detached"();
DROP FUNCTION IF EXISTS {schema}."{prefix}log_default_days"();
DROP FUNCTION IF EXISTS {schema}."{prefix}log_prune_default"(timestamptz, integer);
DROP FUNCTION IF EXISTS {schema}."{prefix}log_partitions"();
DROP FUNCTION IF EXISTS {schema}."{prefix}log_roll_minutes"(interval, integer, interval);
DROP FUNCTION IF EXISTS {schema}."{prefix}log_release_kept"();
DROP FUNCTION IF EXISTS {schema}."{prefix}log_sweep_workflows"(integer);
DROP TABLE IF EXISTS {schema}."{prefix}log_kept", {schema}."{prefix}log_sweep";
DROP TABLE IF EXISTS {schema}."{prefix}log_minutes", {schema}."{prefix}log_minutes_rolled";
-- Dropping the partitioned log drops its partitions; the old table is on its own only mid-upgrade.
DROP TABLE IF EXISTS {schema}."{prefix}log_legacy";
DROP TABLE IF EXISTS {jobs}, {log}, {log_rollup}, {log_rollup_state}, {workers}, {entrypoint_limits},
    {entrypoint_pauses}, {schedules}, {action_log}, {schema_version},
    {job_edges}, {workflows}, {workflow_steps};
DROP TYPE IF EXISTS {job_status}, {final_status};
