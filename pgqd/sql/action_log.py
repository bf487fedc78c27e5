"""Statements of the action log (migration 0007): one row written per operator change, the newest read back."""

from __future__ import annotations

RECORD_ACTION = """
INSERT INTO {action_log} (actor, source, action, target, requested, changed, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

# Newest first, below the id $1 (a page's cursor), at most $2 rows; the primary key serves it.
RECENT_ACTIONS = """
SELECT a.id, a.at, a.actor, a.source, a.action, a.target, a.requested, a.changed, a.detail
FROM {action_log} AS a
WHERE a.id < $1
ORDER BY a.id DESC
LIMIT $2
"""
