-- pgqd schema version 4: the errors of earlier attempts, so that an operator sees every failure of a job.

-- A JSON array of objects (type, message, traceback, attempt, at), one per attempt that failed and was retried
-- or held, the newest last, at most 20 kept. A finished job's final error stays in the log's error_* columns;
-- this column carries the ones before it. NULL for jobs that never failed, so the common case costs nothing.
ALTER TABLE {jobs} ADD COLUMN errors jsonb;
ALTER TABLE {log} ADD COLUMN errors jsonb;
