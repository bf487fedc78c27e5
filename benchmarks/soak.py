"""Overload never collapses: the daemon under a producer at about 50 % and then 150 % of its capacity.

    .venv/bin/python -m benchmarks.soak [--phase-seconds 180] [--clusters private-autovacuum-off server ...]

On each cluster in turn, with the daemon at its defaults (2 worker processes, batch 10, 32 jobs in flight each)
serving the entrypoints of ``--mix`` (by default the no-op entrypoint and three with nothing queued, one of them
with ``concurrency_limit = 2``):

1. capacity: in a fresh database, the rate at which it drains ``--capacity-jobs`` pre-queued no-op jobs (first
   start to last finish, from the log), the median of ``--capacity-rounds`` such drains: one drain of 100,000
   jobs lasts 4-6 s, and three in a row on this machine spread by 10-17 %, which one alone passed on to every
   share below;
2. in another fresh database, one producer (``Client.enqueue_many`` every 0.1 s on one connection) at ``--low``
   (0.5) of that for ``--phase-seconds``, then at ``--high`` (1.5) for as long;
3. the producer stopped, until the backlog is gone (or ``--drain-timeout``).

Every ``--sample-every`` seconds it records the jobs finished per second and their waits (enqueue to handler
start), the jobs in the table, the worker processes' RSS, the sizes of the jobs table, its indexes and the log,
the dead rows and the vacuums; and per phase, the shares of the machine's CPU that went to the producer (this
process and its connection's server process) and to everything else (the capacity drain's too: a producer on
the same machine takes its CPU from the daemon). It reports, per cluster: the rate under overload and while the
backlog drains, against the capacity (target: 90 % or more), the waits at 50 % load in thirds of the phase (flat),
RSS and sizes.

Clusters: ``private-autovacuum-on`` and ``-off`` (the default) are private PostgreSQL clusters started for the
run (benchmarks/private_cluster.py) with every setting at its default but autovacuum; ``server`` is ``--server``
as it is (its autovacuum setting is read and reported, never changed); ``private-autovacuum-on-wide-wal`` is the
first with room for the WAL between checkpoints (``WIDE_WAL``). On a shared server a long transaction
of another database holds back what VACUUM may remove in this one (its xid is in every snapshot), and the dead
rows the soak measures pile up whatever pgqd does: a private cluster has none of that. JSON goes to
benchmarks/results/soak-<date>-<time>.json (or ``--output``); progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import soak_samples
from benchmarks.common import DEFAULT_SERVER, environment, fresh_database, run_until_signalled
from benchmarks.daemon import running_daemon
from benchmarks.drain import fill, measured_rate, wait_for_log
from benchmarks.private_cluster import private_cluster
from benchmarks.runners.mix import IDLE_MIXES
from pgqd import Client, JobSpec
from pgqd.daemon.logs import configure_logging

RESULTS = Path(__file__).resolve().parent / "results"
MIXES = {"idle-limited": IDLE_MIXES["+3, one limited"], "plain": IDLE_MIXES["alone"]}
CLUSTERS = ["server", "private-autovacuum-on", "private-autovacuum-off", "private-autovacuum-on-wide-wal"]
# The last: autovacuum on, and room for the WAL of a flood between checkpoints (by default a checkpoint every
# 1 GB of WAL, and the full pages it makes every page's next change write).
WIDE_WAL = {"max_wal_size": "8GB", "checkpoint_timeout": "15min"}
PROCESSES, BATCH = 2, 10  # the defaults on this machine: a process per CPU, batch 10
TICK = 0.1  # seconds between the producer's calls
GOAL = 0.9  # of the capacity, under overload and while the backlog drains


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("PGQD_BENCH_DSN", DEFAULT_SERVER), help="maintenance DSN")
    p.add_argument("--clusters", nargs="+", choices=CLUSTERS, default=CLUSTERS[1:3], help="(both private ones)")
    p.add_argument("--mix", choices=sorted(MIXES), default="idle-limited", help="entrypoints served (idle-limited)")
    p.add_argument("--capacity-jobs", type=int, default=100_000, help="jobs of a capacity drain (100,000)")
    p.add_argument("--capacity-rounds", type=int, default=3, help="capacity drains, the median taken (3)")
    p.add_argument("--phase-seconds", type=float, default=180.0, help="length of each load phase (180)")
    p.add_argument("--low", type=float, default=0.5, help="first phase's load, of the capacity (0.5)")
    p.add_argument("--high", type=float, default=1.5, help="second phase's load, of the capacity (1.5)")
    p.add_argument("--drain-timeout", type=float, help="longest wait for the backlog (default 3x a phase)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/soak-<date>-<time>.json)")
    args = p.parse_args(argv)
    if args.capacity_rounds < 1:
        p.error("--capacity-rounds must be 1 or more")
    return args


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def cluster(name: str, server: str) -> AsyncIterator[str]:
    if name == "server":
        yield server
        return
    autovacuum = name.removeprefix("private-autovacuum-").removesuffix("-wide-wal")
    wal = WIDE_WAL if name.endswith("-wide-wal") else {}
    with private_cluster({"autovacuum": autovacuum, **wal}) as dsn:
        yield dsn


async def capacity(server: str, jobs: int, mix: Any, rounds: int) -> tuple[list[float], dict[str, float]]:
    """The drain rates of ``jobs`` pre-queued jobs in ``rounds`` drains, and the shares of the machine's CPU
    that the median one used."""
    drains = sorted([await capacity_drain(server, jobs, mix) for _ in range(rounds)], key=lambda drain: drain[0])
    return [rate for rate, _ in drains], drains[len(drains) // 2][1]


async def capacity_drain(server: str, jobs: int, mix: Any) -> tuple[float, dict[str, float]]:
    """The drain rate of ``jobs`` pre-queued jobs, and the shares of the machine's CPU it used."""
    cpu = soak_samples.CpuShares([])
    async with fresh_database(server) as dsn:
        await fill(dsn, jobs)
        async with running_daemon(dsn, PROCESSES, BATCH, mix=mix):
            cpu.mark("start")
            await wait_for_log(dsn, jobs, timeout=max(600.0, jobs / 100))
            cpu.mark("end")
        return await measured_rate(dsn, jobs), cpu.between("start", "end")


class Producer:
    """Enqueues no-op jobs at a set rate, in one call per tick; counts what it sent."""

    def __init__(self, conn: Any) -> None:
        self.client = Client(conn)
        self.sent = 0

    async def run(self, rate: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        began, sent_before = loop.time(), self.sent
        while (elapsed := loop.time() - began) < seconds:
            due = int(rate * min(elapsed + TICK, seconds)) - (self.sent - sent_before)
            for start in range(0, due, 5_000):
                await self.client.enqueue_many([JobSpec("noop") for _ in range(min(5_000, due - start))])
                self.sent += min(5_000, due - start)
            await asyncio.sleep(max(0.0, began + elapsed + TICK - loop.time()))


async def now(conn: Any) -> datetime.datetime:
    """The database's clock, which the log's times are on."""
    moment: datetime.datetime = await conn.fetchval("SELECT clock_timestamp()")
    return moment


class Recorder:
    """A sample every ``every`` seconds, tagged with the phase under way."""

    def __init__(self, conn: Any, producer: Producer, every: float) -> None:
        self.conn, self.producer, self.every = conn, producer, every
        self.phase = "start"
        self.samples: list[dict[str, Any]] = []

    async def run(self) -> None:
        began = last = await now(self.conn)
        sent = self.producer.sent
        while True:
            await asyncio.sleep(self.every)
            moment = await now(self.conn)
            figures = await soak_samples.sample(self.conn, last, moment)
            seconds = (moment - last).total_seconds()
            enqueued = round((self.producer.sent - sent) / seconds, 1)
            self.samples.append({"t": round((moment - began).total_seconds(), 1), "phase": self.phase,
                                 "enqueued_per_s": enqueued, **figures})  # fmt: skip
            s = self.samples[-1]
            progress(f"  t={s['t']:>6.1f}s {s['phase']:<5} enqueued/s {enqueued:>8,.0f} finished/s "
                     f"{s['finished_per_s'] or 0:>8,.0f} p99 wait {s['wait_p99_ms'] or 0:>9,.1f} ms "
                     f"jobs {s['jobs']:>9,} dead {s['dead_rows']:>9,} vacuums {s['vacuums']}+{s['autovacuums']} "
                     f"checkpoints {s['checkpoints']} rss {s['worker_rss_mb']}")  # fmt: skip
            last, sent = moment, self.producer.sent


async def soak(dsn: str, args: argparse.Namespace, rate: float, mix: Any) -> dict[str, Any]:
    conn, producer_conn, recorder_conn = [await asyncpg.connect(dsn) for _ in range(3)]
    producer = Producer(producer_conn)
    recorder = Recorder(recorder_conn, producer, args.sample_every)
    cpu = soak_samples.CpuShares([os.getpid(), await producer_conn.fetchval("SELECT pg_backend_pid()")])
    marks: dict[str, datetime.datetime] = {}
    folder = tempfile.TemporaryDirectory()
    log = Path(folder.name) / "daemon.log"
    try:
        async with running_daemon(dsn, PROCESSES, BATCH, mix=mix, keep_log=log):
            sampling = asyncio.create_task(recorder.run())
            try:
                for phase, share in (("low", args.low), ("high", args.high)):
                    recorder.phase, marks[phase] = phase, await now(conn)
                    cpu.mark(phase)
                    progress(f" {phase}: {share * rate:,.0f} jobs/s for {args.phase_seconds:.0f}s")
                    await producer.run(share * rate, args.phase_seconds)
                recorder.phase, marks["drain"] = "drain", await now(conn)
                cpu.mark("drain")
                progress(" producer stopped; draining the backlog")
                deadline = time.monotonic() + (args.drain_timeout or 3 * args.phase_seconds)
                while time.monotonic() < deadline:
                    if not await conn.fetchval("SELECT count(*) FROM pgqd_jobs"):
                        break
                    await asyncio.sleep(0.5)
                marks["end"] = await now(conn)
                cpu.mark("end")
                await asyncio.sleep(soak_samples.LOG_LAG.total_seconds())  # the last outcomes reach the log
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
        found = await phases(conn, marks, rate)
        for phase, end in (("low", "high"), ("high", "drain"), ("drain", "end")):
            found[phase]["cpu"] = cpu.between(phase, end)
        return {"sent": producer.sent, "left": await conn.fetchval("SELECT count(*) FROM pgqd_jobs"), **found,
                "daemon_log": soak_samples.daemon_log(log), "samples": recorder.samples}  # fmt: skip
    finally:
        folder.cleanup()
        for each in (conn, producer_conn, recorder_conn):
            await each.close()


async def phases(conn: Any, marks: dict[str, datetime.datetime], rate: float) -> dict[str, Any]:
    """Each phase's figures from the log, the low phase's also in thirds, and the drain's rate from the producer's
    stop to the last job's finish."""
    found: dict[str, Any] = {}
    for phase, end in (("low", "high"), ("high", "drain"), ("drain", "end")):
        start, stop = marks[phase], marks[end]
        figures = await soak_samples.window(conn, start, stop)
        if phase == "drain" and figures["last_finish"] is not None:
            span = (figures["last_finish"] - start).total_seconds()
            figures["per_s"] = round(figures["finished"] / span, 1) if span > 0 else None
        elif phase == "drain":
            figures["per_s"] = None  # no backlog: the overload was none
        figures["of_capacity"] = None if figures["per_s"] is None else round(figures["per_s"] / rate, 3)
        found[phase] = {k: v for k, v in figures.items() if k not in ("first_start", "last_finish")}
        found[phase]["seconds"] = round((stop - start).total_seconds(), 1)
    third = (marks["high"] - marks["low"]) / 3
    found["low_thirds"] = []
    for i in range(3):
        figures = await soak_samples.window(conn, marks["low"] + i * third, marks["low"] + (i + 1) * third)
        found["low_thirds"].append({k: v for k, v in figures.items() if k.startswith("wait") or k == "per_s"})
    return found


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """The targets: overload and backlog drain at 90 % of the capacity or more; waits at 50 % load flat (the
    last third's p99 within twice the first's, or under 100 ms). None: no backlog was left to drain."""
    p99 = [third["wait_p99_ms"] or 0.0 for third in result["low_thirds"]]
    drained = result["drain"]["of_capacity"]
    return {
        "overload_at_90pct_of_capacity": (result["high"]["of_capacity"] or 0) >= GOAL,
        "backlog_drains_at_90pct_of_capacity": None if drained is None else drained >= GOAL and not result["left"],
        "waits_flat_at_low_load": p99[2] <= max(2 * p99[0], 100.0),
    }


async def main(argv: list[str] | None = None) -> None:
    configure_logging("warning", "json")
    args = parse_args(argv)
    mix = MIXES[args.mix]
    runs = []
    for name in args.clusters:
        async with cluster(name, args.server) as server:
            admin = await asyncpg.connect(server)
            try:
                autovacuum = await admin.fetchval("SHOW autovacuum")
            finally:
                await admin.close()
            load_before = os.getloadavg()
            progress(
                f"{name} (autovacuum {autovacuum}): capacity of {args.capacity_jobs:,} jobs; load {load_before[0]:.2f}"
            )
            rates, capacity_cpu = await capacity(server, args.capacity_jobs, mix, args.capacity_rounds)
            rate = rates[len(rates) // 2]
            progress(f"{name}: capacity {rate:,.0f} jobs/s (drains: {', '.join(f'{r:,.0f}' for r in rates)}), "
                     f"using {capacity_cpu.get('others_share', 0):.0%} of the CPU")  # fmt: skip
            async with fresh_database(server) as dsn:
                result = await soak(dsn, args, rate, mix)
            run = {"cluster": name, "autovacuum": autovacuum, "capacity_per_s": round(rate, 1),
                   "capacity_drains_per_s": [round(r, 1) for r in rates], "capacity_cpu": capacity_cpu, **result,
                   "environment": {**await environment(server), "load_before": load_before,
                                   "load_after": os.getloadavg()}}  # fmt: skip
            run["targets"] = verdicts(run)
            runs.append(run)
            progress(f"{name}: {summary(run)}")
    stamp = datetime.datetime.now(datetime.UTC)
    document = {
        "benchmark": "soak",
        "date": stamp.date().isoformat(),
        "command": " ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
        "settings": {"processes": PROCESSES, "batch": BATCH, "mix": args.mix, "capacity_jobs": args.capacity_jobs,
                     "capacity_rounds": args.capacity_rounds,
                     "phase_seconds": args.phase_seconds, "low": args.low, "high": args.high,
                     "sample_every_s": args.sample_every, "producer_tick_s": TICK},
        "runs": runs,
    }  # fmt: skip
    output = args.output or RESULTS / f"soak-{stamp:%Y-%m-%d-%H%M}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    for run in runs:
        print(f"{run['cluster']} (autovacuum {run['autovacuum']}): {summary(run)}")
    print(f"JSON: {output}")


def summary(run: dict[str, Any]) -> str:
    low, high, drain = run["low"], run["high"], run["drain"]
    thirds = ", ".join(f"{t['wait_p99_ms']}" for t in run["low_thirds"])
    end = run["samples"][-1] if run["samples"] else {}
    mb = {k: end.get(k, 0) / 2**20 for k in ("jobs_bytes", "jobs_indexes_bytes", "log_bytes")}
    most_rss = max((max(s["worker_rss_mb"], default=0) for s in run["samples"]), default=0)
    drained = (
        "no backlog to drain"
        if drain["per_s"] is None
        else f"{drain['per_s']:,.0f} jobs/s = {drain['of_capacity']:.0%} over {drain['seconds']}s"
    )
    drains = [f"{rate:,.0f}" for rate in run.get("capacity_drains_per_s", [run["capacity_per_s"]])]
    cpu = high.get("cpu", {})
    shares = (
        f" (the producer took {cpu['producer_share']:.0%} of the CPU, the daemon and its server processes "
        f"{cpu['others_share']:.0%}, against {run['capacity_cpu'].get('others_share', 0):.0%} in the capacity drain)"
        if cpu
        else ""
    )
    return (
        f"capacity {run['capacity_per_s']:,.0f} jobs/s (median of {', '.join(drains)}); 50% load: "
        f"{low['per_s']:,.0f} jobs/s, p99 wait by thirds {thirds} ms; 150% load: {high['per_s']:,.0f} jobs/s = "
        f"{high['of_capacity']:.0%} of capacity{shares}; backlog drain: {drained}, {run['left']:,} left; "
        f"worker RSS up to {most_rss} MB; at the end jobs table {mb['jobs_bytes']:.1f} MB, its indexes "
        f"{mb['jobs_indexes_bytes']:.1f} MB, log {mb['log_bytes']:.1f} MB; targets {run['targets']}"
    )


if __name__ == "__main__":
    run_until_signalled(main())
