"""The statements of the log's partition upkeep (the functions of migrations 0011 and 0013, by name), rendered with
``LogPartitionStatements``. Times travel as seconds since the epoch: ``-infinity`` and ``infinity`` (the bounds
of the partition of everything before the upgrade) are floats, where they are no ``datetime``."""

from __future__ import annotations

from pgqd.identifiers import Names
from pgqd.sql import render

# Every partition but the default one, oldest first, with its bounds; and the server's time.
PARTITIONS = """
SELECT p.partition::text AS name, date_part('epoch', p.lower_bound) AS lower_bound,
       date_part('epoch', p.upper_bound) AS upper_bound
FROM {schema}."{prefix}log_partitions"() AS p
WHERE p.lower_bound IS NOT NULL
ORDER BY p.lower_bound
"""

NOW = "SELECT date_part('epoch', now())"

# The days (start, in epoch seconds) that have rows in the default partition, and how many.
DEFAULT_DAYS = """
SELECT date_part('epoch', d.day) AS day, d.rows FROM {schema}."{prefix}log_default_days"() AS d
"""

ADD_PARTITION = """
SELECT {schema}."{prefix}log_add_partition"(to_timestamp($1::double precision), to_timestamp($2::double precision))
"""

DROP_PARTITION = """
SELECT {schema}."{prefix}log_drop_partition"($1::text::regclass, to_timestamp($2::double precision))
"""

DROP_DETACHED = 'SELECT {schema}."{prefix}log_drop_detached"()'

# Skips the rows of workflows with a step still live (log_kept), and returns the rows it settled.
PRUNE_DEFAULT = """
SELECT {schema}."{prefix}log_prune_default"(to_timestamp($1::double precision), $2::integer)
"""

RELEASE_KEPT = 'SELECT {schema}."{prefix}log_release_kept"()'

# Removes the edges, steps and workflows of up to $1 jobs gone from the jobs table and the log.
SWEEP_WORKFLOWS = 'SELECT {schema}."{prefix}log_sweep_workflows"($1::integer)'

# Counts the settled minutes since the last counted into log_minutes (the overview chart's source).
ROLL_MINUTES = """
SELECT {schema}."{prefix}log_roll_minutes"(make_interval(secs => $1::double precision), $2::integer,
                                           make_interval(secs => $3::double precision))
"""

# One upkeep at a time across the fleet (a session lock, so that it spans the round's transactions).
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1::text))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext($1::text))"


class LogPartitionStatements:
    def __init__(self, names: Names) -> None:
        self.partitions = render(PARTITIONS, names)
        self.default_days = render(DEFAULT_DAYS, names)
        self.add_partition = render(ADD_PARTITION, names)
        self.drop_partition = render(DROP_PARTITION, names)
        self.drop_detached = render(DROP_DETACHED, names)
        self.prune_default = render(PRUNE_DEFAULT, names)
        self.release_kept = render(RELEASE_KEPT, names)
        self.sweep_workflows = render(SWEEP_WORKFLOWS, names)
        self.roll_minutes = render(ROLL_MINUTES, names)
        self.lock_key = f"{names.lock_key}:log-partitions"
