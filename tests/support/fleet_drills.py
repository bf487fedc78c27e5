"""Fault drills on a fleet of hosts (``tests/support/netns.py``), each host running the real ``pgqd`` daemon.

A ``FleetRun`` installs pgqd in a fresh database of the fleet's PostgreSQL, starts one daemon per host and feeds
a steady load from the root namespace: jobs of a concurrency-limited entrypoint, of a rate-limited one, of an
unlimited one (long enough that a fault always finds some in flight), and a schedule that ticks every second.
The drills (``partition``, ``degrade``, ``kill``, ``skew``) each record a ``Fault`` in database time; ``report``
then judges the invariants (``tests/support/fleet_checks.py``) and returns figures and violations as a dict.
Used by ``tests/test_fleet_hosts.py`` (short) and ``benchmarks/fleet_drills.py`` (long).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.limits_check import max_overlap
from pgqd import Client, JobSpec
from pgqd.schema import install
from tests.support.fleet_app import RUNS_TABLE
from tests.support.fleet_checks import (
    Fault,
    Run,
    decided_by_last_run,
    most_in_window,
    rerun_report,
    run_intervals,
    tick_report,
)
from tests.support.netns import Fleet, Host, HostDaemon
from tests.support.waiting import wait_until

CONFIG = """
[workers]
processes = {processes}
concurrency = 8
batch_size = 4
poll_interval = "1s"
worker_timeout = "{worker_timeout}s"
shutdown_timeout = "5s"
resources = "tests.support.fleet_app:lifespan"

[metrics]
enabled = false

[logging]
level = "info"
format = "json"
"""

ENTRYPOINT = """
[entrypoints.{name}]
handler = "tests.support.fleet_app:work"
store_result = true
{limits}
retry = {{ max_attempts = 20, initial = "100ms", max = "1s" }}
"""

SCHEDULE = """
[schedules.every_second]
cron = "* * * * * *"
entrypoint = "tick"
"""


@dataclass(frozen=True)
class Load:
    """Jobs enqueued per second, per entrypoint, and how long each runs."""

    limited_per_s: float = 6.0
    limited_sleep: float = 0.3
    concurrency_limit: int = 2
    # Rate-limited jobs come in bursts (``metered_batch`` every ``metered_every`` seconds: on average the limit's
    # rate), so that the limit binds in every burst while no backlog builds up.
    metered_batch: int = 12
    metered_every: float = 2.5
    rate_limit: float = 5.0
    plain_per_s: float = 4.0
    plain_sleep: float = 1.0


@dataclass
class FleetRun:
    fleet: Fleet
    folder: Path
    database: str
    worker_timeout: float = 4.0
    processes: int = 2
    load: Load = field(default_factory=Load)
    daemons: dict[str, HostDaemon] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    enqueued: list[int] = field(default_factory=list)
    conn: Any = None
    _producer: asyncio.Task[None] | None = None

    # --- set-up -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        admin = await asyncpg.connect(self.fleet.admin_dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        self.conn = await asyncpg.connect(self.fleet.admin_dsn(self.database))
        await install(self.conn)
        await self.conn.execute(RUNS_TABLE)
        self.config_path.write_text(self.config())
        for host in self.fleet.hosts:
            self.start_daemon(host)
        await asyncio.gather(*(asyncio.to_thread(d.wait_ready, 30) for d in self.daemons.values()))
        await wait_until(self._all_registered, timeout=30, what="every worker of the fleet registered")
        self._producer = asyncio.create_task(self._produce())

    @property
    def config_path(self) -> Path:
        return self.folder / "fleet.toml"

    def config(self) -> str:
        load = self.load
        limits = {
            "limited": f"concurrency_limit = {load.concurrency_limit}",
            "metered": f'rate_limit = "{load.rate_limit:g}/s"',
            "plain": "",
            "tick": "",
        }
        text = CONFIG.format(processes=self.processes, worker_timeout=f"{self.worker_timeout:g}")
        text += "".join(ENTRYPOINT.format(name=name, limits=extra) for name, extra in limits.items())
        return text + SCHEDULE

    def start_daemon(self, host: Host, skew: float | None = None) -> HostDaemon:
        env = {"PGQD_FLEET_RECORD_DSN": self.fleet.records_dsn(self.database), "PGQD_FLEET_HOST": host.name}
        daemon = HostDaemon(host, self.config_path, self.fleet.queue_dsn(self.database), env, skew).start()
        self.daemons[host.name] = daemon
        return daemon

    async def _all_registered(self) -> bool:
        count = await self.conn.fetchval("SELECT count(*) FROM pgqd_workers")
        return bool(count >= self.processes * len(self.fleet.hosts))

    async def _produce(self) -> None:
        """Enqueues the load every 100 ms, from the root namespace (over loopback, never faulted)."""
        conn = await asyncpg.connect(self.fleet.admin_dsn(self.database))
        try:
            await self._produce_on(Client(conn))
        finally:
            await conn.close()

    async def _produce_on(self, client: Client) -> None:
        load = self.load
        owed = {"limited": 0.0, "plain": 0.0}
        rates = {"limited": load.limited_per_s, "plain": load.plain_per_s}
        sleeps = {"limited": load.limited_sleep, "plain": load.plain_sleep}
        next_burst = time.monotonic()
        while True:
            specs = []
            if time.monotonic() >= next_burst:
                next_burst += load.metered_every
                specs.extend(JobSpec("metered", {"sleep": 0.0}) for _ in range(load.metered_batch))
            for name, rate in rates.items():
                owed[name] += rate / 10
                while owed[name] >= 1:
                    owed[name] -= 1
                    specs.append(JobSpec(name, {"sleep": sleeps[name]}))
            if specs:
                self.enqueued.extend(i for i in await client.enqueue_many(specs) if i is not None)
            await asyncio.sleep(0.1)

    async def now(self) -> datetime:
        moment: datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        return moment

    async def run_for(self, seconds: float) -> None:
        """Lets the fleet work for ``seconds`` of database time."""
        until = await self.now()
        deadline = until.timestamp() + seconds

        async def passed() -> bool:
            return bool((await self.now()).timestamp() >= deadline)

        await wait_until(passed, timeout=seconds + 10, what=f"{seconds:g}s to pass", interval=0.1)

    async def ran_on(self, host: Host, since: datetime) -> bool:
        found = await self.conn.fetchval(
            "SELECT count(*) FROM fleet_runs WHERE host = $1 AND started > $2", host.name, since
        )
        return bool(found)

    async def busy(self, host: Host) -> bool:
        """True while ``host`` runs a long job, so that a fault there interrupts work under way."""
        # Recent runs only: a run of a killed daemon never ends.
        running = await self.conn.fetchval(
            "SELECT count(*) FROM fleet_runs WHERE host = $1 AND entrypoint = 'plain' AND ended IS NULL"
            " AND started > clock_timestamp() - make_interval(secs => $2)",
            host.name,
            self.load.plain_sleep,
        )
        return bool(running)

    # --- the drills -------------------------------------------------------------------------------------------
    async def partition(self, host: Host, hold: float) -> None:
        """Cuts ``host`` off the database for ``hold`` seconds (more than ``worker_timeout``), then heals it."""
        await wait_until(lambda: self.busy(host), timeout=30, what=f"{host.name} to run a job")
        began = await self.now()
        host.partition()
        await self.run_for(hold)
        host.heal()
        healed = await self.now()
        self.faults.append(Fault("partition", host.name, began, healed))
        await wait_until(lambda: self.ran_on(host, healed), timeout=60, what=f"{host.name} to run jobs after the heal")
        back = await self.conn.fetchval(
            "SELECT min(started) FROM fleet_runs WHERE host = $1 AND started > $2", host.name, healed
        )
        self.figures.setdefault("partition_heal_to_first_run_s", []).append(round((back - healed).total_seconds(), 2))

    async def degrade(self, host: Host, seconds: float, delay_ms: float = 100.0, loss: float = 0.01) -> None:
        began = await self.now()
        host.degrade(delay_ms, loss)
        try:
            await self.run_for(seconds)
        finally:
            host.heal()
        ended = await self.now()
        self.faults.append(Fault("degrade", host.name, began, ended))
        rows = await self.conn.fetch(
            "SELECT host, count(*) AS runs FROM fleet_runs WHERE started BETWEEN $1 AND $2 GROUP BY host", began, ended
        )
        by_host = {r["host"]: int(r["runs"]) for r in rows}
        self.figures.setdefault("degraded_host_runs", []).append(by_host.get(host.name, 0))
        self.figures.setdefault("runs_by_host_while_degraded", []).append(by_host)

    async def kill(self, host: Host) -> None:
        """SIGKILLs the host's whole daemon; once its jobs ran again elsewhere, starts it again (as systemd would)."""
        await wait_until(lambda: self.busy(host), timeout=30, what=f"{host.name} to run a job")
        self.daemons[host.name].kill()
        killed = await self.now()
        self.faults.append(Fault("kill", host.name, killed, killed))
        await self.run_for(self.worker_timeout * 2)
        self.start_daemon(host)
        await asyncio.to_thread(self.daemons[host.name].wait_ready, 30)

    async def skew(self, host: Host, offset: float, seconds: float) -> None:
        """Restarts the host's daemon with its clock ``offset`` seconds off, lets it run, then restarts it right."""
        began = await self.now()
        await asyncio.to_thread(self.daemons[host.name].stop, 20)
        await asyncio.to_thread(self.start_daemon(host, skew=offset).wait_ready, 30)
        await self.run_for(seconds)
        await asyncio.to_thread(self.daemons[host.name].stop, 20)
        await asyncio.to_thread(self.start_daemon(host).wait_ready, 30)
        self.faults.append(Fault("skew", host.name, began, await self.now()))

    # --- the end ----------------------------------------------------------------------------------------------
    async def finish(self, timeout: float = 90) -> None:
        """Stops the load, waits until every enqueued job is in the log, and stops the daemons (SIGTERM)."""
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        started = time.monotonic()

        async def drained() -> bool:
            logged = await self.conn.fetchval(
                "SELECT count(*) FROM pgqd_log WHERE job_id = any($1::bigint[])", self.enqueued
            )
            return bool(logged == len(self.enqueued))

        with contextlib.suppress(AssertionError):  # what is missing is reported as lost
            await wait_until(drained, timeout=timeout, what="every job in the log", interval=0.2)
        self.figures["drain_after_load_s"] = round(time.monotonic() - started, 2)
        codes = await asyncio.gather(*(asyncio.to_thread(d.stop, 20) for d in self.daemons.values()))
        self.figures["exit_codes"] = list(codes)

    async def close(self) -> None:
        for daemon in self.daemons.values():
            await asyncio.to_thread(daemon.stop, 10)
        if self.conn is not None:
            await self.conn.close()

    async def report(self) -> dict[str, Any]:
        rows = await self.conn.fetch("SELECT * FROM fleet_runs ORDER BY run_id")
        runs = [
            Run(
                r["run_id"],
                r["job_id"],
                r["entrypoint"],
                r["host"],
                r["claimed_at"],
                r["started"],
                r["ended"],
                r["tick"],
            )
            for r in rows
        ]
        logged = {
            r["job_id"]: (r["status"], json.loads(r["result"]) if r["result"] else None)
            for r in await self.conn.fetch("SELECT job_id, status::text, result::text FROM pgqd_log")
        }
        queued = await self.conn.fetch(
            "SELECT id, headers->>'pgqd-schedule-tick' AS tick, created_at FROM pgqd_jobs WHERE entrypoint = 'tick'"
        )
        queued_ticks = {r["id"]: r["tick"] for r in queued}
        created = {r["id"]: r["created_at"] for r in queued}
        logged_ticks = await self.conn.fetch("SELECT job_id, created_at FROM pgqd_log WHERE entrypoint = 'tick'")
        created.update({r["job_id"]: r["created_at"] for r in logged_ticks})
        load = self.load
        limited = [r for r in runs if r.entrypoint == "limited"]
        intervals, unended = run_intervals(limited, self.faults)
        claims = [r.claimed_at for r in runs if r.entrypoint == "metered" and r.claimed_at is not None]
        windows = {w: most_in_window(claims, w) for w in (1.0, 2.0, 5.0)}
        reruns = rerun_report(runs, self.faults)
        violations = []
        lost = [i for i in self.enqueued if i not in logged]
        failed = [i for i in self.enqueued if i in logged and logged[i][0] != "successful"]
        stuck = await self.conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE entrypoint <> 'tick'")
        overlap = max_overlap(intervals)
        ticks = tick_report(runs, queued_ticks, created)
        wrong_outcomes = decided_by_last_run(runs, {job: result for job, (_, result) in logged.items()})
        checks = {
            "jobs lost": lost,
            "jobs not successful": failed,
            "jobs left in the queue": [stuck] if stuck else [],
            "runs that never ended (no kill explains it)": [r.run_id for r in unended],
            f"more than {load.concurrency_limit} limited runs at once": [overlap]
            if overlap > load.concurrency_limit
            else [],
            "rate limit exceeded": [
                {"window_s": w, "starts": n} for w, n in windows.items() if n > load.rate_limit * (1 + w)
            ],
            "ticks fired twice": ticks["fired_twice"],
            "ticks missing": ticks["missing"],
            "ticks fired before their time": ticks["fired_early"],
            "outcomes kept from a run that was not the last": wrong_outcomes,
            "jobs run again with no fault to explain it": reruns["unexplained_reruns"],
        }
        violations = [f"{name}: {found[:10]}" for name, found in checks.items() if found]
        faults = []
        for index, fault in enumerate(self.faults):
            delays = sorted(reruns["per_fault"].get(index, []))
            faults.append(
                {
                    "kind": fault.kind,
                    "host": fault.host,
                    "seconds": round((fault.ended - fault.began).total_seconds(), 2),
                    "runs_interrupted": len(delays),
                    "late_outcomes_dropped": reruns["dropped_outcomes"].get(index, 0),
                    "first_rerun_after_s": round(delays[0], 2) if delays else None,
                    "last_rerun_after_s": round(delays[-1], 2) if delays else None,
                }
            )
        return {
            "worker_timeout_s": self.worker_timeout,
            "hosts": len(self.fleet.hosts),
            "processes_per_host": self.processes,
            "jobs_enqueued": len(self.enqueued),
            "runs": len(runs),
            "runs_per_host": {h.name: sum(1 for r in runs if r.host == h.name) for h in self.fleet.hosts},
            "limited_max_at_once": overlap,
            "concurrency_limit": load.concurrency_limit,
            "metered_most_claims_in_window": {f"{w:g}s": n for w, n in windows.items()},
            "rate_limit_per_s": load.rate_limit,
            "ticks": ticks["ticks"],
            "faults": faults,
            **self.figures,
            "violations": violations,
        }
