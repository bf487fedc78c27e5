"""Chaos run: the real daemon works through N jobs while faults are injected; then every job is accounted for.

    .venv/bin/python -m benchmarks.chaos [--jobs 20000] [--seconds 600] [--processes 2] [--batch 10] [--capped 0.1]
        [--json]

It runs on a private embedded PostgreSQL (so it can restart the server) and injects: SIGKILL of a random worker
process every 2 s, and one when 5 % of the jobs are done; pg_terminate_backend on every pgqd connection, twice; a
clean restart of PostgreSQL; a crash of it (immediate stop: WAL not yet written is lost, and the start runs crash
recovery); a SIGKILL of the supervisor followed by a new daemon; a failover (the daemon reaches the server
through a TCP proxy, which black-holes every connection open at that moment: no RST, no EOF, while new
connections go through). Among the jobs are poison jobs (``--poison``, default 1) whose handler ends its worker
process on every run. Whenever an ordinary job runs alone as a suspect (it was present in two deaths), the worker
running it is killed too, with a second worker a moment later (a burst): once per suspect, so that each such job
spends one of its max_worker_deaths. A share of the ordinary jobs (``--capped``) belong to an entrypoint with a
fleet-wide concurrency limit, whose slots busy workers hand from job to job in their writes of outcomes. The
handler records every execution (job, attempt, process) in a side
table, on a direct connection. At the end it reports jobs lost (must be 0), jobs stuck in 'picked' (must be 0),
ordinary jobs given up (must be 0), jobs run more than once (allowed for jobs in flight at a fault), how long the
queue took to move again after each fault and how long a killed worker's jobs took to start again, and what
became of the poison jobs (each must be given up as pgqd.WorkerLost while the daemon lives on). Among the jobs are
also ``--workflows`` small DAGs (benchmarks/chaos_workflows.py): every step must end successful, none left
waiting, none started before each of its parents ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from benchmarks.chaos_workflows import STEPS_PER_WORKFLOW, workflow_mix, workflow_report
from benchmarks.common import run_until_signalled
from pgqd import Client, JobSpec, install
from pgqd.daemon.embedded import EmbeddedServer
from pgqd.daemon.logs import configure_logging
from tests.support.tcp_proxy import TcpProxy

REPO = Path(__file__).resolve().parents[1]
PGQD = str(Path(sys.executable).with_name("pgqd"))

CONFIG = """
[workers]
processes = {processes}
concurrency = {concurrency}
batch_size = {batch}
poll_interval = "1s"
worker_timeout = "5s"
shutdown_timeout = "5s"
resources = "benchmarks.handlers:chaos_resources"

[metrics]
enabled = false

[logging]
level = "warning"
format = "json"

[entrypoints.chaos]
handler = "benchmarks.handlers:chaos_record"
retry = {{ max_attempts = 1000, backoff = "exponential", initial = "100ms", max = "1s" }}

# A share of the ordinary jobs (--capped) under a fleet-wide limit: busy workers hand its slots from job to job
# in the writes of outcomes, which the faults cut too.
[entrypoints.chaos_capped]
handler = "benchmarks.handlers:chaos_record"
concurrency_limit = 3
retry = {{ max_attempts = 1000, backoff = "exponential", initial = "100ms", max = "1s" }}

[entrypoints.chaos_poison]
handler = "benchmarks.handlers:chaos_poison"
max_worker_deaths = {poison_deaths}
# As the ordinary jobs: a fault that breaks the handler's own record of its run (its connection cut by a restart)
# is an error to retry, not the end of the poison job, which must end given up for killing its worker.
retry = {{ max_attempts = 1000, backoff = "exponential", initial = "100ms", max = "1s" }}
"""

DATABASE_GONE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

# Progress (share of jobs finished) at which each one-off fault is injected.
PLAN = [
    # The first worker kill comes with progress, like the faults: on a fast machine a short run could otherwise
    # reach the failover (after which kills pause) before the first timed kill.
    (0.05, "kill_worker"),
    (0.15, "terminate_connections"),
    (0.30, "restart_postgres"),
    (0.45, "crash_postgres"),
    (0.60, "terminate_connections"),
    (0.75, "kill_supervisor"),
    (0.85, "failover"),
]


@dataclass
class Fault:
    kind: str
    at: datetime
    detail: str = ""
    recovered_after: float | None = None


@dataclass
class Chaos:
    dsn: str
    server: EmbeddedServer
    proxy: TcpProxy
    config: Path
    log_folder: Path
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # Ordinary suspects whose lone run was killed (each once).
    suspects_hit: set[int] = field(default_factory=set)

    def start_daemon(self) -> None:
        log = (self.log_folder / f"daemon{len(self.daemons)}.log").open("wb")
        self.daemons.append(
            subprocess.Popen(
                [PGQD, "--config", str(self.config)],
                cwd=REPO,
                # pgqd goes through the proxy; the handlers record on a direct line, so that the failover cuts
                # pgqd's own connections only.
                env={**os.environ, "PGQD_DSN": through(self.proxy, self.dsn), "CHAOS_RECORD_DSN": self.dsn},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    @property
    def supervisor(self) -> subprocess.Popen[bytes]:
        return self.daemons[-1]

    def wait_ready(self, timeout: float) -> None:
        """Waits until the last daemon started says it is ready (or has exited): before that, it has not yet
        installed its signal handlers, and a SIGTERM would kill it outright."""
        log = self.log_folder / f"daemon{len(self.daemons) - 1}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.supervisor.poll() is None:
            if b'"supervisor ready"' in log.read_bytes():
                return
            time.sleep(0.05)

    def workers(self) -> list[int]:
        try:
            pid = self.supervisor.pid
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    async def now(self, conn: Any) -> datetime:
        moment: datetime = await conn.fetchval("SELECT clock_timestamp()")
        return moment

    async def kill_worker(self, conn: Any) -> None:
        workers = self.workers()
        if workers:
            victim = random.choice(workers)
            with_suppressed(os.kill, victim, signal.SIGKILL)
            self.faults.append(Fault("kill_worker", await self.now(conn), f"pid {victim}"))

    async def kill_suspect_runners(self, conn: Any) -> None:
        """Kills the worker running an ordinary suspect alone, not hit before, then another worker: a burst."""
        rows = await conn.fetch(
            "SELECT j.id, w.pid FROM pgqd_jobs AS j JOIN pgqd_workers AS w ON w.id = j.worker_id"
            " WHERE j.isolated AND j.status = 'picked' AND j.entrypoint IN ('chaos', 'chaos_capped')"
        )
        mine = set(self.workers())
        for row in rows:
            if row["id"] in self.suspects_hit or row["pid"] not in mine:
                continue
            self.suspects_hit.add(row["id"])
            with_suppressed(os.kill, row["pid"], signal.SIGKILL)
            self.faults.append(Fault("kill_suspect_runner", await self.now(conn), f"job {row['id']} pid {row['pid']}"))
            await asyncio.sleep(0.3)
            await self.kill_worker(conn)
            return

    async def terminate_connections(self, conn: Any) -> None:
        killed = await conn.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'pgqd%' AND pid <> pg_backend_pid()) AS t"
        )
        self.faults.append(Fault("terminate_connections", await self.now(conn), f"{killed} connections"))

    async def failover(self, conn: Any) -> None:
        cut = self.proxy.blackhole_open()
        self.faults.append(Fault("failover", await self.now(conn), f"{cut} connections black-holed"))

    def kill_supervisor(self) -> None:
        self.orphans.extend(self.workers())
        self.supervisor.send_signal(signal.SIGKILL)
        self.supervisor.wait(10)
        self.start_daemon()


def through(proxy: TcpProxy, dsn: str) -> str:
    """The embedded server's DSN (a Unix socket) as a TCP DSN through the proxy."""
    user = urlsplit(dsn).username or "postgres"
    return f"postgresql://{user}@127.0.0.1:{proxy.port}/postgres"


def unix_socket(dsn: str) -> str:
    query = parse_qs(urlsplit(dsn).query)
    return f"{query['host'][0]}/.s.PGSQL.{query.get('port', ['5432'])[0]}"


def with_suppressed(call: Any, *args: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        call(*args)


def wait_gone(pid: int, timeout: float) -> None:
    """Waits for a process that is not our child (an orphaned worker) to end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


async def connect(dsn: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def finished_count(chaos: Chaos, conn: Any) -> tuple[Any, int]:
    """The count of finished jobs, reconnecting when a fault broke the connection."""
    while True:
        try:
            return conn, int(await conn.fetchval("SELECT count(*) FROM pgqd_log"))
        except DATABASE_GONE:
            with_suppressed(conn.terminate)
            conn = await connect(chaos.dsn)


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    server = EmbeddedServer(folder / "pgdata")
    dsn = server.start()
    chaos: Chaos | None = None
    try:
        conn = await asyncpg.connect(dsn)
        await install(conn)
        await conn.execute(
            "CREATE TABLE chaos_runs (job_id bigint, attempt int, pid int, at timestamptz DEFAULT now())"
        )
        client = Client(conn)
        every = round(1 / args.capped) if args.capped > 0 else 0
        jobs = [
            JobSpec("chaos_capped" if every and n % every == 0 else "chaos", {"n": n, "work_ms": args.work_ms})
            for n in range(args.jobs)
        ]
        # Spread through the queue, so each poison job is claimed in a batch with ordinary ones.
        for n in range(args.poison):
            jobs.insert((n + 1) * len(jobs) // (args.poison + 1), JobSpec("chaos_poison", {"n": n}))
        for start in range(0, len(jobs), 5000):
            await client.enqueue_many(jobs[start : start + 5000])
        for workflow in workflow_mix(args.workflows, args.work_ms):
            await client.enqueue_workflow(workflow)
        config = folder / "chaos.toml"
        config.write_text(
            CONFIG.format(
                processes=args.processes,
                concurrency=max(20, 2 * args.batch),
                batch=args.batch,
                poison_deaths=args.poison_deaths,
            )
        )
        proxy = TcpProxy.to_unix_socket(unix_socket(dsn)).start()
        chaos = Chaos(dsn, server, proxy, config, folder)
        chaos.start_daemon()
        began = time.monotonic()
        plan = list(PLAN)
        next_kill = time.monotonic() + args.kill_every
        suspect_kills_resume = 0.0
        done = 0
        total = enqueued(args)
        while done < total and time.monotonic() - began < args.seconds:
            await asyncio.sleep(0.1)
            conn, done = await finished_count(chaos, conn)
            progress = done / total
            if plan and progress >= plan[0][0]:
                _, kind = plan.pop(0)
                if kind == "kill_worker":
                    await chaos.kill_worker(conn)
                    next_kill = time.monotonic() + args.kill_every
                elif kind == "terminate_connections":
                    await chaos.terminate_connections(conn)
                elif kind in ("restart_postgres", "crash_postgres"):
                    stopped = time.monotonic()
                    await asyncio.to_thread(server.restart, crash=kind == "crash_postgres")
                    conn = await connect(dsn)
                    # Measured from the moment the server is back: how fast do the workers find it again?
                    down = f"down and up again in {time.monotonic() - stopped:.2f}s"
                    chaos.faults.append(Fault(kind, await chaos.now(conn), down))
                elif kind == "failover":
                    await chaos.failover(conn)
                    # No worker kill for a while: the recovery measured is the running workers', on new
                    # connections, not a fresh worker's.
                    next_kill = suspect_kills_resume = time.monotonic() + 10
                else:
                    at = await chaos.now(conn)
                    chaos.kill_supervisor()
                    chaos.faults.append(Fault("kill_supervisor", at, f"{len(chaos.orphans)} orphaned workers"))
            if time.monotonic() >= next_kill:
                next_kill = time.monotonic() + args.kill_every
                await chaos.kill_worker(conn)
            if time.monotonic() >= suspect_kills_resume:
                with contextlib.suppress(*DATABASE_GONE):
                    await chaos.kill_suspect_runners(conn)
        elapsed = time.monotonic() - began
        # The orphans of a killed supervisor can finish the run while its successor is still starting.
        await asyncio.to_thread(chaos.wait_ready, 60)
        chaos.supervisor.send_signal(signal.SIGTERM)
        try:
            exit_code = chaos.supervisor.wait(60)
        except subprocess.TimeoutExpired:
            chaos.supervisor.kill()
            exit_code = -9
        for pid in chaos.orphans:
            await asyncio.to_thread(wait_gone, pid, 30)
        conn = await connect(dsn)
        return await account(conn, args, chaos, elapsed, exit_code)
    finally:
        if chaos is not None:
            chaos.proxy.stop()
        server.stop()


async def account(conn: Any, args: argparse.Namespace, chaos: Chaos, elapsed: float, exit_code: int) -> dict[str, Any]:
    live = {row[0]: row[1] for row in await conn.fetch("SELECT status::text, count(*) FROM pgqd_jobs GROUP BY 1")}
    logged = {row[0]: row[1] for row in await conn.fetch("SELECT status::text, count(*) FROM pgqd_log GROUP BY 1")}
    in_log = sum(logged.values())
    poison_ids = [row[0] for row in await conn.fetch("SELECT job_id FROM pgqd_log WHERE entrypoint = 'chaos_poison'")]
    poison_ids += [row[0] for row in await conn.fetch("SELECT id FROM pgqd_jobs WHERE entrypoint = 'chaos_poison'")]
    ordinary_given_up = await conn.fetchval(
        "SELECT count(*) FROM pgqd_log WHERE entrypoint <> 'chaos_poison' AND error_type = 'pgqd.WorkerLost'"
    )
    ran_twice = await conn.fetchval(
        "SELECT count(*) FROM (SELECT job_id FROM chaos_runs WHERE NOT (job_id = ANY($1::bigint[]))"
        " GROUP BY job_id HAVING count(*) > 1) AS t",
        poison_ids,
    )
    never_ran = await conn.fetchval(
        "SELECT count(*) FROM pgqd_log AS l WHERE l.status = 'successful'"
        " AND NOT EXISTS (SELECT 1 FROM chaos_runs AS r WHERE r.job_id = l.job_id)"
    )
    for fault in chaos.faults:
        fault.recovered_after = await recovery(conn, fault)
    one_offs = [f for f in chaos.faults if f.kind not in ("kill_worker", "kill_suspect_runner")]
    kills = sorted(f.recovered_after for f in chaos.faults if f.kind == "kill_worker" and f.recovered_after is not None)
    return {
        "jobs_enqueued": enqueued(args),
        "jobs_finished": in_log,
        "final_statuses": logged,
        "jobs_lost": enqueued(args) - in_log - sum(live.values()),
        "jobs_left_in_queue": live,
        "jobs_stuck_picked": live.get("picked", 0),
        "ordinary_jobs_given_up": ordinary_given_up,
        "jobs_executed_more_than_once": ran_twice,
        "successful_without_a_recorded_run": never_ran,
        "executions": await conn.fetchval("SELECT count(*) FROM chaos_runs"),
        "workers_killed": sum(1 for f in chaos.faults if f.kind in ("kill_worker", "kill_suspect_runner")),
        "suspect_runners_killed": sum(1 for f in chaos.faults if f.kind == "kill_suspect_runner"),
        "faults": [
            {"kind": f.kind, "at": f.at, "detail": f.detail, "recovered_after_s": f.recovered_after} for f in one_offs
        ],
        "killed_worker_jobs_running_again_within_s": {
            "median": kills[len(kills) // 2] if kills else None,
            "max": kills[-1] if kills else None,
        },
        "poison": await poison_report(conn, poison_ids),
        "workflows": await workflow_report(conn),
        "elapsed_s": round(elapsed, 1),
        "last_daemon_exit_code": exit_code,
    }


def enqueued(args: argparse.Namespace) -> int:
    """Every job the run enqueues: ordinary, poison, and the workflows' steps."""
    return args.jobs + args.poison + args.workflows * STEPS_PER_WORKFLOW


async def poison_report(conn: Any, ids: list[int]) -> dict[str, Any]:
    """What became of the poison jobs: how each ended, after how many runs, with which error."""
    rows = await conn.fetch(
        "SELECT l.job_id, l.status::text AS status, l.attempts, l.error_type, l.error_message,"
        " (SELECT count(*) FROM chaos_runs AS r WHERE r.job_id = l.job_id) AS runs,"
        " (SELECT array_agg(format('%s pid %s', r.at, r.pid) ORDER BY r.at) FROM chaos_runs AS r"
        "  WHERE r.job_id = l.job_id) AS run_times"
        " FROM pgqd_log AS l WHERE l.job_id = ANY($1::bigint[]) ORDER BY l.job_id",
        ids,
    )
    return {
        "jobs": len(ids),
        "given_up": sum(1 for row in rows if row["status"] == "exception" and row["error_type"] == "pgqd.WorkerLost"),
        "ended": [dict(row) for row in rows],
    }


async def recovery(conn: Any, fault: Fault) -> float | None:
    """Seconds until the fault stopped mattering.

    For a killed worker: until the last of the jobs it was running had started again on another process. For a
    failover: until the first job claimed after it started. For the others: until the first execution recorded
    after the fault, so the queue was moving again.
    """
    if fault.kind in ("kill_worker", "kill_suspect_runner"):
        pid = int(fault.detail.split()[-1])
        seconds = await conn.fetchval(
            """
            SELECT extract(epoch FROM max(again.first_at) - $2)
            FROM (SELECT DISTINCT job_id FROM chaos_runs WHERE pid = $1 AND at <= $2) AS lost
            JOIN LATERAL (
                SELECT min(r.at) AS first_at FROM chaos_runs AS r
                WHERE r.job_id = lost.job_id AND r.pid <> $1 AND r.at > $2
            ) AS again ON true
            WHERE NOT EXISTS (SELECT 1 FROM pgqd_log AS l WHERE l.job_id = lost.job_id AND l.finished_at <= $2)
            """,
            pid,
            fault.at,
        )
    elif fault.kind == "failover":
        # Jobs running at the cut go on recording on their direct line: what counts is the first job claimed
        # after it, on a new connection.
        seconds = await conn.fetchval(
            "SELECT extract(epoch FROM min(started_at) - $1) FROM pgqd_log WHERE started_at > $1", fault.at
        )
    else:
        seconds = await conn.fetchval("SELECT extract(epoch FROM min(at) - $1) FROM chaos_runs WHERE at > $1", fault.at)
    return None if seconds is None else round(float(seconds), 3)


def main() -> None:
    configure_logging("warning", "json")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=600, help="give up after this long (default 600)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--batch", type=int, default=10, help="claim batch (default 10); concurrency is twice that, 20 at least"
    )
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between worker kills (default 2)")
    parser.add_argument("--work-ms", type=float, default=50, help="each job works up to this long (default 50)")
    parser.add_argument(
        "--capped", type=float, default=0.1, help="share of the jobs on an entrypoint limited to 3 (default 0.1)"
    )
    parser.add_argument("--poison", type=int, default=1, help="jobs that kill their worker on every run (default 1)")
    parser.add_argument("--poison-deaths", type=int, default=3, help="their max_worker_deaths (default 3)")
    parser.add_argument("--workflows", type=int, default=20, help="workflows of 12 steps among the jobs (default 20)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--logs", type=Path, help="copy the daemons' logs into this folder at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgqd-chaos-") as folder:
        try:
            result = run_until_signalled(run(args, Path(folder)))
        finally:
            # Kept whatever the end: a run that failed or was stopped is the one whose logs are wanted.
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in Path(folder).glob("daemon*.log"):
                    shutil.copy(log, args.logs / log.name)
    ok = (
        result["jobs_lost"] == 0
        and result["jobs_stuck_picked"] == 0
        and result["ordinary_jobs_given_up"] == 0
        and result["jobs_finished"] == enqueued(args)
        and result["poison"]["given_up"] == args.poison
        and result["final_statuses"].get("successful", 0) == enqueued(args) - args.poison
        and result["workflows"]["steps_not_successful"] == 0
        and result["workflows"]["steps_left_waiting"] == 0
        and result["workflows"]["steps_started_before_a_parent_ended"] == 0
    )
    result["verdict"] = "ok" if ok else "FAILED"
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
