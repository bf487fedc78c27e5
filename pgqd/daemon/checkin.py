"""The check-in a worker process writes to the supervisor over its pipe, once a second or so, from its event loop.

One line per beat: ``beat <worker id> <jobs started> <retiring> <running> <database age>``. The worker id is 0
until the worker has registered in the database; the database age is the seconds since the worker's last
successful round trip to the database, or -1 when it has not reached it yet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Beat:
    worker_id: int
    jobs_started: int
    retiring: bool
    # Jobs in flight when the beat was sent: a death with jobs in flight is explained by a job.
    running: int
    database_age: float | None

    def encode(self) -> bytes:
        age = -1.0 if self.database_age is None else self.database_age
        fields = (self.worker_id, self.jobs_started, int(self.retiring), self.running, f"{age:.3f}")
        return ("beat " + " ".join(map(str, fields)) + "\n").encode()


def parse_beat(line: bytes) -> Beat | None:
    """The beat on one line, or None when the line is not one (a torn or foreign line is ignored)."""
    parts = line.split()
    if len(parts) != 6 or parts[0] != b"beat":
        return None
    try:
        worker_id, jobs, retiring, running = (int(p) for p in parts[1:5])
        age = float(parts[5])
    except ValueError:
        return None
    return Beat(worker_id, jobs, retiring == 1, running, None if age < 0 else age)
