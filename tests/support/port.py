"""Helpers of the storage port's conformance suite (tests/test_port_*.py): new jobs, a registered worker,
and a recorder of the events a subscription delivers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pgqd.backend.base import Backend
from pgqd.models import EntrypointLimit, Event, NewJob, WorkerInfo
from tests.support.waiting import wait_until


def new(entrypoint: str = "work", **fields: object) -> NewJob:
    return NewJob(entrypoint, **fields)  # type: ignore[arg-type]


def info(pid: int = 4242, entrypoints: Sequence[str] = ("work",)) -> WorkerInfo:
    return WorkerInfo("port-host", pid, tuple(entrypoints))


async def worker(backend: Backend, pid: int = 4242, entrypoints: Sequence[str] = ("work",)) -> int:
    return await backend.register_worker(info(pid, entrypoints))


def plain(*names: str) -> list[EntrypointLimit]:
    return [EntrypointLimit(name) for name in names or ("work",)]


async def enqueue_ids(backend: Backend, jobs: Sequence[NewJob]) -> list[int]:
    ids = await backend.enqueue(jobs, "raise")
    assert all(job_id is not None for job_id in ids)
    return [job_id for job_id in ids if job_id is not None]


class Events(list[Event]):
    """Collects the events of a subscription."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    async def wait_for(self, kind: str, timeout: float = 5.0) -> Event:
        async def arrived() -> Event | None:
            return next((event for event in self if event.kind == kind), None)

        found = await wait_until(arrived, timeout=timeout, what=f"a {kind!r} event")
        return found


def aware(moment: datetime | None) -> bool:
    return moment is not None and moment.tzinfo is not None
