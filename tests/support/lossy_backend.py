"""A backend that loses one claim's reply: the claim takes its jobs in the database, then fails as if the
connection had dropped before the reply came back. The worker must release those jobs (its reconcile step)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pgqd import Worker
from pgqd.backend.base import Backend
from pgqd.errors import BackendUnavailable
from pgqd.models import ClaimResult, EntrypointLimit


class LosesAClaimReply:
    """Wraps ``backend``; its first regular claim once ``worker`` is set is the one lost, after ``before_failing``
    (given the worker) has run."""

    def __init__(self, backend: Backend, before_failing: Callable[[Worker], Awaitable[None]] | None = None) -> None:
        self.backend = backend
        self.before_failing = before_failing
        self.worker: Worker | None = None
        self.lost: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def claim(
        self, worker_id: int, batch: int, limits: Sequence[EntrypointLimit], *, isolated: bool = False
    ) -> ClaimResult:
        result = await self.backend.claim(worker_id, batch, limits, isolated=isolated)
        if isolated or self.lost or self.worker is None or not result.jobs:
            return result
        self.lost = [job.id for job in result.jobs]
        if self.before_failing is not None:
            await self.before_failing(self.worker)
        raise BackendUnavailable("connection lost before the claim's reply came back")
