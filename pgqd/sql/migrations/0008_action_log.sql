-- pgqd schema version 8: the action log, one row per change an operator made (from the web UI or the CLI).
--
-- Written by operators only, a few rows per action, never on the hot path. Kept until deleted by hand: it is
-- the record of who canceled, deleted, requeued, paused or resumed what, and when.
CREATE TABLE {action_log} (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,        -- who: the web UI's user (and client address), or the CLI's OS user and host
    source    text NOT NULL,        -- 'web' or 'cli'
    action    text NOT NULL,        -- cancel, delete, requeue, retry, pause, resume, schedule-run, ...
    target    text NOT NULL,        -- what it was aimed at: job ids, "every live job matching ...", an entrypoint
    requested integer NOT NULL,     -- how many jobs (or names) it was aimed at
    changed   integer NOT NULL,     -- how many it changed
    detail    text NOT NULL DEFAULT ''  -- what else the operator was told (conflicts, a time budget reached)
);
