-- pgqd schema version 2: cron schedules, fired exactly once per tick across the fleet.

CREATE TABLE {schedules} (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    entrypoint    text NOT NULL,
    payload       bytea,
    priority      integer NOT NULL DEFAULT 0,
    enabled       boolean NOT NULL DEFAULT true,
    misfire       text NOT NULL DEFAULT 'coalesce',
    -- The tick that fires next. Firing moves it forward with a compare-and-set on its old value, in the same
    -- statement that enqueues the tick's job: of all the daemons that see a tick due, exactly one wins.
    next_run      timestamptz NOT NULL,
    last_run      timestamptz,
    last_job_id   bigint,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
