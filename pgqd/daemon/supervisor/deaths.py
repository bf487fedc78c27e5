"""How the supervisor judges a worker's death: its cause in words, and the crash-loop guard.

The guard counts only deaths that no job explains: a worker that failed to start (an import error, resources
that fail to open), or that died or was killed for not checking in with nothing running. A death while jobs were in
flight is a job's doing (a handler that kills its process, or blocks its event loop), and is handled by the
rescue of those jobs, whose budget of lost runs gives a poisonous job up. So a poison job can never take the
daemon down, whatever its ``max_attempts``; a deployment that cannot run at all still stops with exit status 1.
Every unplanned death, explained or not, delays the next start (restart backoff), so nothing forks in a storm.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field

from pgqd.daemon.supervisor.children import Child

CRASH_WINDOW = 60.0
CRASH_LIMIT = 5
FIRST_RESTART_DELAY = 0.25
MAX_RESTART_DELAY = 5.0


def exit_cause(code: int) -> str:
    """How a worker ended, from its exit code as ``os.waitstatus_to_exitcode`` gives it."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"killed by signal {-code}"
        return f"killed by signal {-code} ({name})"
    return f"exit status {code}"


class Verdict(enum.Enum):
    # SIGKILLed from outside while serving (an operator, a kill drill, the OOM killer), or killed by the
    # supervisor for not finishing its drain in time: replaced at once, not counted.
    REPLACE_NOW = "replace now"
    # SIGKILLed from outside while starting: not counted, but its replacement waits for the restart backoff, so
    # a start-up that is always killed cannot become a fork storm.
    KILLED_STARTING = "killed while starting"
    # Jobs were in flight at its last check-in: one of them did it.
    EXPLAINED = "explained by a job"
    # Idle at its last check-in, but it may have claimed since: the rescue of its jobs will tell.
    ASK_THE_RESCUE = "ask the rescue"
    # Died before it registered: a start-up failure. Counts.
    UNEXPLAINED = "unexplained"


def judge(worker: Child, code: int) -> Verdict:
    """The verdict on an unplanned death, from what the supervisor knows at once."""
    from_outside = code == -signal.SIGKILL and not worker.killed
    if (from_outside and worker.db_id) or (worker.draining and worker.killed):
        return Verdict.REPLACE_NOW
    if from_outside:
        return Verdict.KILLED_STARTING
    if worker.running:
        return Verdict.EXPLAINED
    if worker.db_id:
        return Verdict.ASK_THE_RESCUE
    return Verdict.UNEXPLAINED


@dataclass
class CrashGuard:
    """Unplanned deaths in the last ``CRASH_WINDOW`` seconds: all of them set the restart backoff, the ones no
    job explains trip the guard at ``CRASH_LIMIT``."""

    deaths: list[float] = field(default_factory=list)
    crashes: list[float] = field(default_factory=list)

    def died(self, now: float) -> float:
        """Records an unplanned death; returns how long to wait before starting its replacement."""
        self.deaths = [t for t in self.deaths if now - t < CRASH_WINDOW] + [now]
        return min(FIRST_RESTART_DELAY * 2.0 ** (len(self.deaths) - 1), MAX_RESTART_DELAY)

    def crashed(self, now: float) -> bool:
        """Records a death no job explains; True when they come in a loop."""
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW] + [now]
        return len(self.crashes) >= CRASH_LIMIT
