"""Readies each new connection of a worker's pool to claim jobs and record outcomes before its first real use.

The first claim and the first outcome flush on a connection cost 10-30 ms more than the later ones: asyncpg
prepares the statement and looks up the array types it has no codec for yet (a query of its own), and the
server process compiles the claim function and plans its statements. A worker mostly reuses the connection it
released last, so the others stay cold until two calls overlap, as they do when the heartbeat, the rescue of
silent workers and the log pruning first run: the claim then went to a cold connection, and the job it was
sent for waited that long. Done when the pool opens each connection, the cost moves to start-up.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from pgqd.backend.postgres import PostgresBackend

# No worker has this id: the claim and the flush below find no job of its to act on.
NO_WORKER = 0


async def warm_up(backend: PostgresBackend) -> None:
    """A claim of no entrypoint and a flush of no outcome on ``backend``'s connection; neither changes a row.

    The claim still runs every statement of a claim that comes back short, which is what an idle worker's
    claims are. A statement the database refuses (an install older than this code) is left to the real call
    to report; a lost connection fails the opening of the connection, as it would have anyway.
    """
    with contextlib.suppress(asyncpg.PostgresError):
        await backend.claim(NO_WORKER, 1, ())
        await backend.record(NO_WORKER, [], [])
