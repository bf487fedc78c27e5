"""The check-in a worker process writes to the supervisor over its pipe, once a second or so, from its event loop.

(Not the heartbeat: that is the worker's row in the database, written by the engine for the fleet to see.)

One line per check-in: ``check-in <worker id> <jobs started> <retiring> <running> <database age>``. The worker
id is 0 until the worker has registered in the database; the database age is the seconds since the worker's
last successful round trip to the database, or -1 when it has not reached it yet. Both ends are the same code
(the worker is forked from the supervisor), so the line changes with them.
"""

from __future__ import annotations

from dataclasses import dataclass

_TAG = b"check-in"


@dataclass(frozen=True)
class CheckIn:
    worker_id: int
    jobs_started: int
    retiring: bool
    # Jobs in flight when the check-in was sent: a death with jobs in flight is explained by a job.
    running: int
    database_age: float | None

    def encode(self) -> bytes:
        age = -1.0 if self.database_age is None else self.database_age
        fields = (self.worker_id, self.jobs_started, int(self.retiring), self.running, f"{age:.3f}")
        return _TAG + b" " + " ".join(map(str, fields)).encode() + b"\n"


def parse_check_in(line: bytes) -> CheckIn | None:
    """The check-in on one line, or None when the line is not one (a torn or foreign line is ignored)."""
    parts = line.split()
    if len(parts) != 6 or parts[0] != _TAG:
        return None
    try:
        worker_id, jobs, retiring, running = (int(p) for p in parts[1:5])
        age = float(parts[5])
    except ValueError:
        return None
    return CheckIn(worker_id, jobs, retiring == 1, running, None if age < 0 else age)
