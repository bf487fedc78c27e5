"""The web UI's database pool: the daemon's bounded pool (``pgqd.backend.bounded``), with the whole wait of a page
for a connection kept to one command timeout.

A page waiting for a connection while the others hang waits one command timeout, not that plus a connect
timeout.
"""

from __future__ import annotations

from pgqd.backend.bounded import BoundedPool


class WebPool(BoundedPool):
    @property
    def acquire_limit(self) -> float:
        return self.timeouts.command
