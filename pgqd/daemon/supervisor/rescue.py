"""The rescue of a dead worker's jobs, done in a short-lived child process the supervisor forks and reaps.

Why a child rather than a surviving worker told through a pipe: a child needs no worker to be alive (the only
worker may be the one that died, or all of them may be dying in a loop), adds no second protocol on the
check-in pipes, and whatever the database does to it (hang, refuse, reset) it cannot stall anything but itself:
the supervisor's loop only starts it, kills it past its deadline and reads one line from it when it is reaped.
A fork of the supervisor is cheap (copy on write, no event loop in the parent) and deaths are rare.

A rescue that fails is retried with backoff. When it never succeeds, the stale-heartbeat rescue that every
worker runs takes the jobs back after ``worker_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from pgqd.backend.postgres import PostgresBackend
from pgqd.dsn import mask_dsn
from pgqd.identifiers import Names

log = structlog.get_logger("pgqd.daemon.supervisor.rescue")

# How long one attempt may take in the child, and how much longer before the supervisor kills it.
ATTEMPT_TIMEOUT = 5.0
KILL_MARGIN = 2.0
ATTEMPTS = 6
FIRST_RETRY = 0.5
# The name the child takes in /proc/<pid>/comm (and ps, top), so operators and tests tell it from a worker.
PROCESS_NAME = b"pgqd-rescue"
SHOWN_IDS = 20


@dataclass(frozen=True)
class RescueReport:
    """What a finished rescue tells the supervisor: the worker it was for and how many jobs it put back (None:
    it gave up after every attempt failed)."""

    worker_id: int
    worker_pid: int
    jobs: int | None


@dataclass
class _Rescue:
    worker_id: int
    worker_pid: int
    cause: str
    attempt: int = 0
    due_at: float = 0.0
    pid: int = 0
    report_fd: int = -1
    deadline: float = 0.0
    errors: list[str] = field(default_factory=list)


class Rescuer:
    """Keeps the rescues the supervisor asked for: starts them, retries failures, kills overdue children."""

    def __init__(self, dsn: str | None, names: Names, close_inherited: Callable[[], None]) -> None:
        self.dsn = dsn
        self.names = names
        self._close_inherited = close_inherited
        self._waiting: list[_Rescue] = []
        self._running: dict[int, _Rescue] = {}

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._running)

    def owns(self, pid: int) -> bool:
        return pid in self._running

    def pids(self) -> list[int]:
        return list(self._running)

    def request(self, worker_id: int, worker_pid: int, cause: str, now: float) -> None:
        self._waiting.append(_Rescue(worker_id, worker_pid, cause, due_at=now))

    def next_due(self) -> float | None:
        """The earliest moment the loop must act: a retry to start or a child to kill."""
        moments = [r.due_at for r in self._waiting] + [r.deadline for r in self._running.values()]
        return min(moments, default=None)

    def drop_retries(self) -> None:
        """At shutdown: first attempts still run, failed ones are not tried again."""
        retries = [r for r in self._waiting if r.attempt > 0]
        for rescue in retries:
            log.warning(
                "not retrying the rescue of a dead worker's jobs: stopping; the stale-heartbeat rescue takes them",
                worker_pid=rescue.worker_pid,
                worker_id=rescue.worker_id,
            )
        self._waiting = [r for r in self._waiting if r.attempt == 0]

    def start_due(self, now: float) -> None:
        due = [r for r in self._waiting if r.due_at <= now]
        self._waiting = [r for r in self._waiting if r.due_at > now]
        for rescue in due:
            self._start(rescue, now)

    def kill_overdue(self, now: float) -> None:
        for rescue in self._running.values():
            if now > rescue.deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rescue.pid, signal.SIGKILL)
                rescue.deadline = now + KILL_MARGIN  # reaped on the next turn; no need to look before then

    def reaped(self, pid: int, status: int, now: float) -> RescueReport | None:
        """Handles the end of a rescue child; returns a report once the rescue is over (done or given up)."""
        rescue = self._running.pop(pid)
        line = _read_report(rescue.report_fd)
        code = os.waitstatus_to_exitcode(status)
        if code == 0 and line.startswith("rescued "):
            count, *shown = (int(word) for word in line.split()[1:])
            if count:
                log.warning(
                    "rescued the jobs of a dead worker",
                    worker_pid=rescue.worker_pid,
                    worker_id=rescue.worker_id,
                    cause=rescue.cause,
                    jobs=count,
                    job_ids=shown,
                )
            return RescueReport(rescue.worker_id, rescue.worker_pid, count)
        error = line.removeprefix("error ").strip() if line else _describe_status(code)
        rescue.errors.append(error)
        if rescue.attempt >= ATTEMPTS:
            log.error(
                "gave up rescuing a dead worker's jobs; the stale-heartbeat rescue takes them after worker_timeout",
                worker_pid=rescue.worker_pid,
                worker_id=rescue.worker_id,
                attempts=rescue.attempt,
                error=error,
            )
            return RescueReport(rescue.worker_id, rescue.worker_pid, None)
        delay = FIRST_RETRY * 2 ** (rescue.attempt - 1)
        log.warning(
            "could not rescue a dead worker's jobs now; retrying",
            worker_pid=rescue.worker_pid,
            worker_id=rescue.worker_id,
            attempt=rescue.attempt,
            retry_in=delay,
            error=error,
        )
        rescue.due_at = now + delay
        self._waiting.append(rescue)
        return None

    def _start(self, rescue: _Rescue, now: float) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_fd)
                self._close_inherited()
                code = _rescue_in_child(self.dsn, self.names, rescue.worker_id, rescue.cause, write_fd)
            finally:
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        rescue.attempt += 1
        rescue.pid = pid
        rescue.report_fd = read_fd
        rescue.deadline = now + ATTEMPT_TIMEOUT + KILL_MARGIN
        self._running[pid] = rescue


def _read_report(fd: int) -> str:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 65536):
            data += chunk
    os.close(fd)
    return data.decode(errors="replace").strip()


def _describe_status(code: int) -> str:
    if code < 0:
        return f"the rescue process was killed by signal {-code} (no answer within {ATTEMPT_TIMEOUT:g}s?)"
    return f"the rescue process exited with status {code}"


def _rescue_in_child(dsn: str | None, names: Names, worker_id: int, cause: str, report_fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _name_process(PROCESS_NAME)

    async def rescue() -> list[int]:
        backend = await PostgresBackend.open(dsn, names, pool_size=1, application_name="pgqd-rescue")
        try:
            return await backend.rescue_worker(worker_id, cause)
        finally:
            await backend.close()

    try:
        ids = asyncio.run(asyncio.wait_for(rescue(), ATTEMPT_TIMEOUT))
    except TimeoutError:
        report = f"error no answer from the database within {ATTEMPT_TIMEOUT:g}s"
        code = 1
    except Exception as exc:
        report = "error " + mask_dsn(f"{type(exc).__name__}: {exc}").replace("\n", " ")
        code = 1
    else:
        # The count and the first ids only: the line must fit the pipe, which is read once the child is gone.
        report = " ".join(["rescued", str(len(ids)), *map(str, ids[:SHOWN_IDS])])
        code = 0
    with contextlib.suppress(OSError):
        os.write(report_fd, report.encode() + b"\n")
    return code


def _name_process(name: bytes) -> None:
    # prctl(PR_SET_NAME): Linux only; elsewhere the child keeps its parent's name, which is harmless.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)
