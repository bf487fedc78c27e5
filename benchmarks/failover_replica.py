"""A real failover under load: the primary of a streaming pair crashes and its standby is promoted.

    .venv/bin/python -m benchmarks.failover_replica [--rounds 3] [--load 10] [--down 3] [--held 1] [--json]

Each round builds a private primary and hot standby (``tests/support/replication.py``; PostgreSQL's own server
programs, loopback ports 30000-30099), runs the real daemon, two producers and a schedule against them through
one multi-host DSN (``target_session_attrs=read-write``), crashes the primary (``pg_ctl stop -m immediate``),
leaves it down for ``--down`` seconds (the time a failure detector takes) and promotes the standby. The drill is
``tests/support/failover_drill.py``; the rounds alternate between

- ``sync``: synchronous replication (``synchronous_standby_names``);
- ``async``: asynchronous replication, the standby as close behind as it keeps by itself;
- ``async-lagging``: asynchronous replication with the standby's link held for ``--held`` seconds before the
  crash, so that it lacks the last commits (what a busy primary or a slow network leaves behind).

Printed per round: time from the promotion to the first job running again and to a job enqueued on the idle
daemon starting, and what the new primary lacks of what producers were told and a reader saw committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import report, run_until_signalled
from tests.support.failover_drill import DrillResult, DrillSettings, run_drill
from tests.support.replication import server_binaries

KINDS = ("sync", "async", "async-lagging")
# The daemon's warnings that tell an operator the database lost what pgqd had written (docs/reliability.md).
RELEASED = "released jobs held in the database but not running here"
MOVED_BACK = "schedule moved back to a tick already fired"


def row(kind: str, result: DrillResult, load: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "replication": kind,
        "promotion_s": result.promotion_seconds,
        "promotion_to_first_job_s": result.resumed_after_promotion,
        "enqueue_to_start_after_failover_s": result.wake_after_failover,
        "acknowledged_enqueues": result.acknowledged_enqueues,
        "failed_enqueue_calls": result.failed_enqueue_calls,
        "standby_lag_bytes_at_crash": result.standby_lag_bytes_at_crash,
        "lost_enqueues": len(result.lost_enqueues),
        "lost_outcomes": len(result.lost_outcomes),
        "ids_handed_out_twice": len(result.ids_handed_out_twice),
        "effects_missing": len(result.effects_missing),
        "jobs_run_twice": len(result.jobs_run_twice),
        "ticks_fired_twice": len(result.ticks_fired_twice),
        "jobs_left": result.jobs_left,
        "jobs_logged_twice": len(result.jobs_logged_twice),
        "workers_restarted": result.worker_pids_after != result.worker_pids_before,
        "released_warnings": result.daemon_warnings.get(RELEASED, 0),
        "schedule_moved_back_warnings": sum(
            n for event, n in result.daemon_warnings.items() if event.startswith(MOVED_BACK)
        ),
        "load_average_1m": round(load[0], 2),
    }


def environment() -> dict[str, Any]:
    binaries = server_binaries()
    version = ""
    if binaries is not None:
        version = subprocess.run(
            [str(binaries / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "postgres": {"server_version": version, "fsync": "off (a server crash, not a host crash)"},
    }


async def run(rounds: int, load: float, down: float, held: float, kinds: list[str]) -> list[dict[str, Any]]:
    results = []
    for number in range(rounds):
        for kind in kinds:
            settings = DrillSettings(
                synchronous=kind == "sync",
                load_before=load,
                down_for=down,
                load_after=load,
                replication_held=held if kind == "async-lagging" else 0.0,
            )
            with tempfile.TemporaryDirectory(prefix="pgqd-failover-replica-") as folder:
                started = time.monotonic()
                result = await run_drill(settings, Path(folder))
            results.append({"round": number + 1, **row(kind, result, os.getloadavg())})
            results[-1]["drill_s"] = round(time.monotonic() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=float, default=10.0, help="seconds of load before the crash and after")
    parser.add_argument("--down", type=float, default=3.0, help="seconds between the crash and the promotion")
    parser.add_argument("--held", type=float, default=1.0, help="async-lagging: seconds the standby gets nothing")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--json", action="store_true", help="print the result on one line")
    args = parser.parse_args()
    if server_binaries() is None:
        parser.error("needs the PostgreSQL server programs (/usr/lib/postgresql/N/bin or $PGQD_TEST_PG_BIN)")
    # The producers' pools log every failed reconnect during the outage; the results say what happened.
    logging.getLogger("asyncpg").setLevel(logging.CRITICAL)
    results = run_until_signalled(run(args.rounds, args.load, args.down, args.held, args.kinds))
    report("failover_replica", results, environment(), args.json)


if __name__ == "__main__":
    main()
