-- pgqd schema version 10: the history of finished jobs per entrypoint, for the web UI's charts of run time and queue wait.

-- The due time of a finished job's last run, so that its queue wait is started_at - execute_after (a deferred
-- or retried job did not wait while it was not due). Rows written before this version have none: their wait
-- counts from created_at.
ALTER TABLE {log} ADD COLUMN IF NOT EXISTS execute_after timestamptz;

-- Finished jobs per quarter of an hour, entrypoint and final status, with histograms of run time and queue
-- wait, written by each daemon's lead worker from the newest log rows (pgqd.daemon.log_rollup). The 24-hour and
-- 7-day charts read these few rows instead of a week of log rows. measure 0 counts the jobs (class 0); 1 and 2
-- count those whose run time (finished - started) or queue wait (started - due) fell in a class: class c holds
-- durations from 1 ms * 2^(c/4) to 1 ms * 2^((c+1)/4), class 0 everything shorter.
CREATE TABLE IF NOT EXISTS {log_rollup} (
    bucket_start timestamptz NOT NULL,
    entrypoint   text NOT NULL,
    status       {final_status} NOT NULL,
    measure      smallint NOT NULL,
    class        smallint NOT NULL,
    jobs         bigint NOT NULL,
    PRIMARY KEY (bucket_start, entrypoint, status, measure, class)
);

-- How far the rollup has got: the time of the last pass that rolled up the current hour (one row).
CREATE TABLE IF NOT EXISTS {log_rollup_state} (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    rolled_at   timestamptz NOT NULL
);
