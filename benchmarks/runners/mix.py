"""Configurations of several entrypoints, some of them limited, that compare.py gives every system alike.

A mix names each entrypoint and its fleet-wide limits. Unlimited entrypoints run the no-op handler; limited ones
run ``limited_run``, which stands for a call to a slow service (``WORK_S``) and records when it started and
ended, on this machine's clock, and when its job was claimed, on the database's: from those records the
benchmark checks that the limits held (``benchmarks/limits_check.py``). A mix travels to a peer's consumer as
JSON in ``$BENCH_ENTRYPOINTS``, and the records go to the file ``$BENCH_RECORDS`` names. The peers' runners
import this module, so it uses the standard library only.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass

ENTRYPOINTS_ENV = "BENCH_ENTRYPOINTS"
RECORDS_ENV = "BENCH_RECORDS"
WORK_S = 0.005  # what a limited entrypoint's job takes: a call to a slow service, in miniature
LIMITED_SHARE = 0.10  # of a mix's jobs, those on its limited entrypoints


@dataclass(frozen=True)
class Entrypoint:
    name: str
    concurrency_limit: int = 0  # jobs running at once across the fleet (0: none)
    rate_per_s: float = 0.0  # jobs started per second across the fleet, bursts up to as many (0: none)
    slow: bool = False  # runs ``limited_run`` without a limit (a limited entrypoint always does)

    @property
    def limited(self) -> bool:
        return self.concurrency_limit > 0 or self.rate_per_s > 0

    @property
    def runs_slow(self) -> bool:
        return self.slow or self.limited


def unlimited(*names: str) -> tuple[Entrypoint, ...]:
    return tuple(Entrypoint(name) for name in names)


# Eight entrypoints: five without limits, two with a concurrency limit and one with a rate limit.
REALISTIC = (
    *unlimited("mail", "thumbnail", "index", "webhook", "report"),
    Entrypoint("billing", concurrency_limit=2),
    Entrypoint("crm_sync", concurrency_limit=4),
    Entrypoint("sms", rate_per_s=200.0),
)
# The same without its limited entrypoints (and so without their jobs).
REALISTIC_UNLIMITED_ONLY = tuple(e for e in REALISTIC if not e.limited)
# The same entrypoints, jobs and handlers, with the limits lifted (benchmarks/limits_lifted.py).
REALISTIC_LIMITS_LIFTED = tuple(Entrypoint(e.name, slow=e.limited) for e in REALISTIC)

# The measurement of the claim's cost alone: one entrypoint with jobs, three more with nothing queued, one of
# them limited or not.
IDLE_MIXES = {
    "alone": unlimited("noop"),
    "+3 unlimited": unlimited("noop", "idle_a", "idle_b", "idle_c"),
    "+3, one limited": (*unlimited("noop", "idle_a", "idle_b"), Entrypoint("idle_c", concurrency_limit=2)),
}


def job_counts(mix: tuple[Entrypoint, ...], jobs: int, has_jobs: tuple[str, ...] | None = None) -> dict[str, int]:
    """``jobs`` spread over the entrypoints: ``LIMITED_SHARE`` of them evenly over the limited ones (when there
    are any), the rest evenly over the others; only over ``has_jobs`` when given."""
    takers = [e for e in mix if has_jobs is None or e.name in has_jobs]
    limited = [e.name for e in takers if e.limited]
    free = [e.name for e in takers if not e.limited]
    on_limited = round(jobs * LIMITED_SHARE) if limited and free else (jobs if limited else 0)
    counts = {e.name: 0 for e in mix}
    for names, total in ((limited, on_limited), (free, jobs - on_limited)):
        for index, name in enumerate(names):
            counts[name] = total // len(names) + (1 if index < total % len(names) else 0)
    return counts


def dumps(mix: tuple[Entrypoint, ...]) -> str:
    return json.dumps([asdict(e) for e in mix])


def loads(text: str) -> tuple[Entrypoint, ...]:
    return tuple(Entrypoint(**fields) for fields in json.loads(text))


_records: tuple[int, int] | None = None  # this process's id and its descriptor of the records file


def _records_fd() -> int:
    """The records file, opened once per process. Opened, written and closed for each run, it cost 22 µs of CPU
    per run (against 3 µs for the write alone): a cost of the measurement that fell on the drain with limited
    entrypoints only, and on the worker whose rate is measured."""
    global _records
    pid = os.getpid()
    if _records is None or _records[0] != pid:  # a forked child opens its own
        _records = (pid, os.open(os.environ[RECORDS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    return _records[1]


def record(entrypoint: str, started: float, ended: float, claimed: float) -> None:
    """One line per run, written by one ``write(2)`` to a file opened with ``O_APPEND``: each line lands whole at
    the file's end, so the lines of several processes never mix. Unbuffered: the line is in the file when the
    run ends, whenever the process does."""
    os.write(_records_fd(), f"{entrypoint} {started:.6f} {ended:.6f} {claimed:.6f}\n".encode("ascii"))


async def limited_run(entrypoint: str, claimed: float) -> None:
    started = time.time()
    await asyncio.sleep(WORK_S)
    record(entrypoint, started, time.time(), claimed)
