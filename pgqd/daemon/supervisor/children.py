"""The supervisor's record of one forked worker process, and what it learns from the worker's check-ins."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass

import structlog

from pgqd.daemon.check_in import parse_check_in

log = structlog.get_logger("pgqd.daemon.supervisor.main")


@dataclass
class Child:
    """The supervisor's record of one forked worker process: its pipe, its last check-in, its drain state."""

    pid: int
    generation: int
    check_in_fd: int
    started: float
    last_check_in: float
    # The worker that runs the daemon's one-per-daemon duties: cron schedules and the queue gauges.
    lead: bool = False
    db_id: int = 0
    jobs: int = 0
    running: int = 0
    # When (on this process's monotonic clock) the worker last completed a round trip to the database.
    db_seen_at: float | None = None
    retiring: bool = False
    draining: bool = False
    reason: str = ""
    # When a draining worker must be gone; past it, it is killed and its jobs rescued.
    deadline: float | None = None
    # Set when the supervisor itself SIGKILLs the worker, with the reason in words.
    killed: str = ""
    pending: bytes = b""

    def read_check_ins(self) -> None:
        """Takes in whatever check-ins the worker wrote since the last look (never blocks)."""
        try:
            data = os.read(self.check_in_fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EBADF:
                log.warning("check-in pipe failed", worker_pid=self.pid, error=str(exc))
            return
        if not data:
            return
        now = time.monotonic()
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            check_in = parse_check_in(line)
            if check_in is None:
                continue
            self.db_id, self.jobs, self.retiring = check_in.worker_id, check_in.jobs_started, check_in.retiring
            self.running = check_in.running
            if check_in.database_age is not None:
                self.db_seen_at = now - check_in.database_age
            self.last_check_in = now

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return 0.0
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def stop_processes(workers: set[int], others: set[int], grace: float, margin: float) -> None:
    """SIGTERMs ``workers`` (they drain), waits until they and ``others`` have exited or ``grace`` has passed,
    then SIGKILLs what is left. For the supervisor's last act after its loop failed, so it needs no loop."""
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    pids = workers | others
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids -= _reap_any()
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while pids and time.monotonic() < deadline + margin:
        pids -= _reap_any()
        time.sleep(0.05)


def _reap_any() -> set[int]:
    gone = set()
    with contextlib.suppress(ChildProcessError):
        while (pid := os.waitpid(-1, os.WNOHANG)[0]) != 0:
            gone.add(pid)
    return gone
