"""Fleet drills, the long form: three hosts in network namespaces, each running the real daemon against one
private PostgreSQL, go through every drill in turn under a steady load; then every invariant is judged.

    python -m benchmarks.fleet_drills [--worker-timeout 10] [--rounds 1] [--json]

Needs root, iproute2, iptables and faketime (scripts/install-test-tools.sh). Each round: a partition of host 1
for twice ``worker_timeout``, then healed; 100 ms more latency and 1 % packet loss on host 2's link for
``--degrade`` seconds; a SIGKILL of host 3's whole daemon (started again once its jobs ran elsewhere); host 1's
daemon restarted with its clock ``--skew`` seconds ahead, for ``--skew-seconds``. ``--steady`` seconds of plain
work separate the drills. The handlers record every run on a link the drills never fault; the result lists each
fault (runs it interrupted, late outcomes dropped, how soon the jobs ran again), the limits as measured from the
handlers' records, the schedule's ticks, and the violations (must be none). tests/test_fleet_hosts.py is the
short form; docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import run_until_signalled
from pgqd.daemon.logs import configure_logging
from tests.support.fleet_drills import FleetRun, Load
from tests.support.netns import Fleet, fleet, missing_tools


async def drills(built: Fleet, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    load = Load(plain_per_s=args.plain_per_s)
    run = FleetRun(built, folder, f"fleet_{uuid.uuid4().hex[:8]}", args.worker_timeout, args.processes, load)
    h1, h2, h3 = built.hosts
    try:
        await run.start()
        await run.run_for(args.steady)
        for _ in range(args.rounds):
            await run.partition(h1, hold=2 * args.worker_timeout)
            await run.run_for(args.steady)
            await run.degrade(h2, seconds=args.degrade, delay_ms=100, loss=0.01)
            await run.run_for(args.steady)
            await run.kill(h3)
            await run.run_for(args.steady)
            await run.skew(h1, offset=args.skew, seconds=args.skew_seconds)
            await run.run_for(args.steady)
        await run.finish()
        return await run.report()
    finally:
        await run.close()


def main() -> None:
    configure_logging("warning", "json")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--processes", type=int, default=2, help="worker processes per host (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="times every drill is run (default 1)")
    p.add_argument("--steady", type=float, default=10.0, help="seconds of plain work between drills")
    p.add_argument("--degrade", type=float, default=30.0, help="seconds of the slow, lossy link")
    p.add_argument("--skew", type=float, default=30.0, help="seconds host 1's clock runs ahead")
    p.add_argument("--skew-seconds", type=float, default=20.0, help="how long it runs so")
    p.add_argument("--plain-per-s", type=float, default=6.0, help="unlimited 1 s jobs enqueued per second")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    args = p.parse_args()
    missing = missing_tools(skew=True)
    if missing:
        sys.exit(f"fleet drills need {', '.join(missing)}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pgqd-fleet-") as folder, fleet() as built:
        result = run_until_signalled(drills(built, args, Path(folder)))
    document = {
        "benchmark": "fleet_drills",
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "command": " ".join(["python -m benchmarks.fleet_drills", *sys.argv[1:]]),
        "wall_s": round(time.monotonic() - began, 1),
        "result": result,
    }
    print(json.dumps(document, indent=None if args.json else 2, default=str))
    if result["violations"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
