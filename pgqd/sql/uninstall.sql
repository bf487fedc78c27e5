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
DROP FUNCTION IF EXISTS {enqueue_steps}(
    text[], bytea[], text[], integer[], double precision[], timestamptz[], text[], text[], text[], integer[], bigint[],
    boolean, text, text
);
DROP FUNCTION IF EXISTS {settle_children}(bigint[], text[], text[], bigint[], text);
DROP FUNCTION IF EXISTS {raise_dedupe_conflict}(text[]);
DROP FUNCTION IF EXISTS {notify_ids}(text, text, bigint[]);
DROP TABLE IF EXISTS {jobs}, {log}, {workers}, {entrypoint_limits}, {entrypoint_pauses}, {schedules}, {schema_version},
    {job_edges}, {workflows}, {workflow_steps};
DROP TYPE IF EXISTS {job_status}, {final_status};
