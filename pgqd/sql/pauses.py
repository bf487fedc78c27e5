"""Statements that pause and resume entrypoints fleet-wide (table ``entrypoint_pauses``, migration 0003).

The claim function reads the same table, so a pause takes effect at the next claim of every worker, whether or
not it heard a notification. Resuming announces the entrypoints as if jobs had been enqueued, so idle workers
claim at once rather than at their next poll.
"""

from __future__ import annotations

import functools

from pgqd.identifiers import Names
from pgqd.sql import notices, render

PAUSE = """
INSERT INTO {entrypoint_pauses} AS p (entrypoint, paused)
SELECT DISTINCT u.ep, true FROM unnest($1::text[]) AS u(ep)
ON CONFLICT (entrypoint) DO UPDATE SET paused = true, changed_at = now()
RETURNING p.entrypoint
"""

# Every entrypoint, those not seen yet included: the '*' row. Exceptions made by an earlier resume are dropped.
PAUSE_ALL = """
WITH cleared AS (
    DELETE FROM {entrypoint_pauses} WHERE entrypoint <> '*'
)
INSERT INTO {entrypoint_pauses} AS p (entrypoint, paused) VALUES ('*', true)
ON CONFLICT (entrypoint) DO UPDATE SET paused = true, changed_at = now()
RETURNING p.entrypoint
"""

# While everything is paused ('*' row), resuming one entrypoint records it as an exception; otherwise its row
# simply goes. Both branches see the same snapshot, so exactly one of them acts.
RESUME = """
WITH everything AS (
    SELECT EXISTS (SELECT 1 FROM {entrypoint_pauses} WHERE entrypoint = '*') AS paused
),
removed AS (
    DELETE FROM {entrypoint_pauses} AS p
    WHERE p.entrypoint = ANY ($1::text[]) AND NOT (SELECT e.paused FROM everything AS e)
),
excepted AS (
    INSERT INTO {entrypoint_pauses} AS p (entrypoint, paused)
    SELECT DISTINCT u.ep, false FROM unnest($1::text[]) AS u(ep)
    WHERE (SELECT e.paused FROM everything AS e)
    ON CONFLICT (entrypoint) DO UPDATE SET paused = false, changed_at = now()
)
SELECT {announce}
""".replace("{announce}", notices.given("$2", "$3"))

RESUME_ALL = """
WITH removed AS (
    DELETE FROM {entrypoint_pauses}
)
SELECT {announce}
""".replace("{announce}", notices.given("$1", "$2"))

PAUSES = "SELECT p.entrypoint, p.paused FROM {entrypoint_pauses} AS p"


class PauseStatements:
    def __init__(self, names: Names) -> None:
        self.pause = render(PAUSE, names)
        self.pause_all = render(PAUSE_ALL, names)
        self.resume = render(RESUME, names)
        self.resume_all = render(RESUME_ALL, names)
        self.pauses = render(PAUSES, names)


@functools.lru_cache(maxsize=64)
def pause_statements_for(names: Names) -> PauseStatements:
    return PauseStatements(names)
