"""The failover drill: a primary dies under load and its standby is promoted, with pgqd running throughout.

Shared by tests/test_failover_replica.py (a short drill) and benchmarks/failover_replica.py (the long one).

A real daemon (``pgqd`` subprocess) and two producers (``Client`` on an asyncpg pool, ``SyncClient`` on a psycopg
connection from a DSN) reach the pair through one multi-host DSN with ``target_session_attrs=read-write``. The
handlers record their runs in ``test_runs`` (their effects) through a pool on the same DSN; a schedule ticks every
second. A reader polls the primary's log, which is what "reported done" means here: an outcome some other session
saw committed. Then the primary crashes (``pg_ctl stop -m immediate``), stays down for ``down_for`` seconds
(failure detection), and the standby is promoted. Nobody restarts anything: producers retry their failed calls,
and the daemon finds the new primary by itself.

The result says what survived: enqueues the producers were told succeeded, outcomes seen committed, the effects
of every outcome recorded as successful, and how long after the promotion the first job ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from pgqd import Client, JobSpec, SyncClient, Workflow, install
from tests.support.daemon import Daemon, daemon_config
from tests.support.daemon_app import CREATE_RUNS
from tests.support.replication import ReplicatedPair
from tests.support.waiting import wait_until

DRILL_CONFIG = """
[schedules.tick]
cron = "* * * * * *"
entrypoint = "sleeper"
payload = "0"

[entrypoints.sleeper.retry]
max_attempts = 50
initial = "100ms"
max = "1s"
"""


@dataclass(frozen=True)
class DrillSettings:
    synchronous: bool
    # Seconds of load before the crash, of the primary being down, and of load after the promotion.
    load_before: float = 3.0
    down_for: float = 1.0
    load_after: float = 3.0
    # Asynchronous drills: seconds before the crash during which the standby receives nothing (a lagging link).
    replication_held: float = 0.0
    batch: int = 5
    enqueue_every: float = 0.02
    job_seconds: float = 0.02
    processes: int = 2
    worker_timeout: str = "10s"
    # Long, so that only a NOTIFY on the followed LISTEN connection can start the last job quickly.
    poll_interval: str = "20s"
    drain_timeout: float = 60.0


@dataclass
class DrillResult:
    synchronous: bool
    acknowledged_enqueues: int = 0
    failed_enqueue_calls: int = 0
    outcomes_seen_before_crash: int = 0
    # What the new primary lacks of what was acknowledged or seen committed on the old one.
    lost_enqueues: list[str] = field(default_factory=list)
    lost_outcomes: list[str] = field(default_factory=list)
    # Acknowledged jobs whose id now names another job (the new primary handed the id out again).
    ids_handed_out_twice: list[str] = field(default_factory=list)
    # Successful outcomes on the new primary whose handler's effect is not there.
    effects_missing: list[str] = field(default_factory=list)
    # Jobs whose handler ran more than once, and schedule ticks that got more than one job.
    jobs_run_twice: list[str] = field(default_factory=list)
    ticks_fired_twice: list[str] = field(default_factory=list)
    # After the drain: jobs left unfinished, and jobs logged more than once.
    jobs_left: int = 0
    jobs_logged_twice: list[str] = field(default_factory=list)
    final_statuses: dict[str, int] = field(default_factory=dict)
    promotion_seconds: float = 0.0
    resumed_after_promotion: float | None = None
    # An idle daemon after the failover: enqueue to handler start, with a poll interval far longer.
    wake_after_failover: float | None = None
    worker_pids_before: list[int] = field(default_factory=list)
    worker_pids_after: list[int] = field(default_factory=list)
    standby_lag_bytes_at_crash: int | None = None
    daemon_warnings: dict[str, int] = field(default_factory=dict)
    # The workflow in flight at the crash (a root, members side by side, a callback): how each step ended on
    # the new primary (absent: lost with the old one), steps left unended, and runs started before a parent ended.
    workflow_statuses: dict[str, str] = field(default_factory=dict)
    workflow_left: int = 0
    workflow_started_early: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Producers:
    """An asyncpg ``Client`` on a pool and a psycopg ``SyncClient`` in a thread, enqueueing until stopped.

    Each job carries a key of its own (as its dedupe key and in a header): after an asynchronous failover the
    new primary hands out again the ids of the transactions it lost, so ids alone cannot say what survived."""

    def __init__(self, dsn: str, settings: DrillSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.acknowledged: dict[str, int] = {}
        self.failed_calls = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._numbers = itertools.count()

    def _specs(self, producer: str) -> list[JobSpec]:
        with self._lock:
            keys = [f"{producer}-{next(self._numbers)}" for _ in range(self.settings.batch)]
        payload = str(self.settings.job_seconds)
        return [JobSpec("sleeper", payload, dedupe_key=key, headers={"test-key": key}) for key in keys]

    def _note(self, specs: list[JobSpec], ids: list[int | None]) -> None:
        with self._lock:
            self.acknowledged.update((str(spec.dedupe_key), i) for spec, i in zip(specs, ids, strict=True) if i)

    def _failed(self) -> None:
        with self._lock:
            self.failed_calls += 1

    async def run_async(self) -> None:
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2, timeout=3)
        client = Client(pool)
        try:
            while not self._stop.is_set():
                specs = self._specs("asyncpg")
                try:
                    self._note(specs, await asyncio.wait_for(client.enqueue_many(specs), 5))
                except Exception:
                    self._failed()  # unacknowledged: it may or may not have committed
                    await asyncio.sleep(0.1)
                await asyncio.sleep(self.settings.enqueue_every)
        finally:
            pool.terminate()

    def run_sync(self) -> None:
        # connect_timeout: a host that is down refuses at once here, but one that vanished would hang the call.
        client = SyncClient(self.dsn + "&connect_timeout=3")
        try:
            while not self._stop.is_set():
                specs = self._specs("psycopg")
                try:
                    self._note(specs, client.enqueue_many(specs))
                except Exception:
                    self._failed()
                    self._stop.wait(0.1)
                self._stop.wait(self.settings.enqueue_every)
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def stop(self) -> None:
        self._stop.set()


async def _connect(dsn: str) -> Any:
    """A connection that keeps trying for a while: right after the promotion the DSN may still refuse."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncpg.connect(dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# Each outcome in the log, named by the job's key (a schedule's job has none: by its id).
LOGGED_OUTCOMES = "SELECT coalesce(dedupe_key, 'id:' || job_id), finished_at FROM pgqd_log"


class _Reader:
    """Polls the primary's log: every outcome it sees there was committed and could have been reported done."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seen: set[tuple[str, datetime]] = set()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                try:
                    rows = await conn.fetch(LOGGED_OUTCOMES)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    return  # the primary is gone: what was seen so far is the record
                self.seen.update((row[0], row[1]) for row in rows)
                await asyncio.sleep(0.05)
        finally:
            conn.terminate()

    def stop(self) -> None:
        self._stop.set()


def _daemon_warnings(daemon: Daemon) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in daemon.events():
        if line.get("level") in ("warning", "error", "critical"):
            event = str(line.get("event"))
            counts[event] = counts.get(event, 0) + 1
    return counts


async def run_drill(settings: DrillSettings, folder: Path) -> DrillResult:
    """Runs one drill on a pair of its own in ``folder``; everything it started is stopped on the way out."""
    result = DrillResult(synchronous=settings.synchronous)
    with ReplicatedPair(synchronous=settings.synchronous, through_proxy=True) as pair:
        dsn = await pair.create_database("drill")
        setup = await asyncpg.connect(dsn)
        await install(setup)
        await setup.execute(CREATE_RUNS)
        await setup.close()
        await pair.wait_replayed()

        config = daemon_config(
            processes=settings.processes,
            worker_timeout=settings.worker_timeout,
            workers_extra=f'poll_interval = "{settings.poll_interval}"',
            extra=DRILL_CONFIG,
        ).replace('poll_interval = "1s"\n', "")
        config_path = folder / "drill.toml"
        config_path.write_text(config)
        daemon = Daemon(config_path, dsn).start()
        producers = _Producers(dsn, settings)
        reader = _Reader(pair.primary.dsn("drill"))
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Future[Any]] = []
        try:
            daemon.wait_ready(timeout=30)
            result.worker_pids_before = sorted(daemon.worker_pids())
            tasks = [
                loop.create_task(producers.run_async()),
                loop.run_in_executor(None, producers.run_sync),
                loop.create_task(reader.run()),
            ]
            # Its members run across the crash: the root ends after 1 s, the members take 2 s each.
            await _enqueue_workflow(dsn)
            await asyncio.sleep(settings.load_before)
            if settings.replication_held > 0:
                pair.hold_replication()
                await asyncio.sleep(settings.replication_held)
            with contextlib.suppress(Exception):
                result.standby_lag_bytes_at_crash = await pair.standby_lag_bytes()
            pair.crash_primary()
            reader.stop()
            await asyncio.sleep(settings.down_for)
            started = time.monotonic()
            pair.promote()
            result.promotion_seconds = round(time.monotonic() - started, 3)
            new_primary = await _connect(pair.standby.dsn("drill"))
            try:
                promoted_at = await new_primary.fetchval("SELECT clock_timestamp()")
                await asyncio.sleep(settings.load_after)
                producers.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
                tasks = []
                result.resumed_after_promotion = await _first_run_after(new_primary, promoted_at)
                await _drain(new_primary, sorted(producers.acknowledged) + WORKFLOW_KEYS, settings.drain_timeout)
                await _account_workflow(new_primary, result)
                result.wake_after_failover = await _wake_time(new_primary, dsn)
                result.worker_pids_after = sorted(daemon.worker_pids())
                await _account(new_primary, result, producers, reader)
            finally:
                await new_primary.close()
        finally:
            producers.stop()
            reader.stop()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            daemon.stop(timeout=20)
            result.daemon_warnings = _daemon_warnings(daemon)
    return result


WORKFLOW_MEMBERS = 6
WORKFLOW_KEYS = ["wf-root", *(f"wf-member-{n}" for n in range(WORKFLOW_MEMBERS)), "wf-callback"]
# Each step's parents, by key.
WORKFLOW_PARENTS = {
    **{f"wf-member-{n}": ["wf-root"] for n in range(WORKFLOW_MEMBERS)},
    "wf-callback": [f"wf-member-{n}" for n in range(WORKFLOW_MEMBERS)],
}


async def _enqueue_workflow(dsn: str) -> None:
    workflow = Workflow("failover-drill")

    def step(key: str, seconds: str, after: Any = None) -> Any:
        return workflow.add("sleeper", seconds, after=after, name=key, dedupe_key=key, headers={"test-key": key})

    root = step("wf-root", "1")
    members = [step(f"wf-member-{n}", "2", root) for n in range(WORKFLOW_MEMBERS)]
    step("wf-callback", "0.1", members)
    conn = await asyncpg.connect(dsn)
    try:
        await Client(conn).enqueue_workflow(workflow)
    finally:
        await conn.close()


async def _account_workflow(conn: Any, result: DrillResult) -> None:
    """How the workflow ended on the new primary, and whether any step ran before one of its parents ended."""
    ended = await conn.fetch(
        "SELECT dedupe_key, status::text, finished_at FROM pgqd_log WHERE dedupe_key = ANY ($1)", WORKFLOW_KEYS
    )
    result.workflow_statuses = {r["dedupe_key"]: r["status"] for r in ended}
    finished = {r["dedupe_key"]: r["finished_at"] for r in ended}
    result.workflow_left = await conn.fetchval(
        "SELECT count(*) FROM pgqd_jobs WHERE dedupe_key = ANY ($1)", WORKFLOW_KEYS
    )
    runs = await conn.fetch("SELECT key, started FROM test_runs WHERE key = ANY ($1)", WORKFLOW_KEYS)
    for run in runs:
        for parent in WORKFLOW_PARENTS.get(run["key"], []):
            if parent not in finished or run["started"] < finished[parent]:
                result.workflow_started_early.append(f"{run['key']} before {parent}")


async def _first_run_after(conn: Any, promoted_at: datetime) -> float | None:
    seconds = await wait_until(
        lambda: conn.fetchval(
            "SELECT extract(epoch FROM min(started) - $1) FROM test_runs WHERE started > $1", promoted_at
        ),
        timeout=30,
        what="a job to run after the promotion",
    )
    return round(float(seconds), 3)


async def _drain(conn: Any, keys: list[str], timeout: float) -> None:
    """Until every acknowledged job still known to the database has ended (schedule ticks keep coming)."""

    async def left() -> list[Any]:
        rows: list[Any] = await conn.fetch(
            "SELECT id, dedupe_key, status::text, worker_id, attempts FROM pgqd_jobs WHERE dedupe_key = ANY ($1)", keys
        )
        return rows

    deadline = time.monotonic() + timeout
    while rows := await left():
        if time.monotonic() > deadline:
            workers = await conn.fetch("SELECT id, pid, heartbeat_at FROM pgqd_workers")
            raise AssertionError(f"jobs left on the new primary after {timeout:g}s: {rows[:10]}; workers: {workers}")
        await asyncio.sleep(0.1)


async def _wake_time(conn: Any, dsn: str) -> float:
    """Enqueue one job on the idle daemon and time its start: the poll interval is long, so only the NOTIFY
    on a LISTEN connection that followed the failover starts it promptly."""
    producer = await asyncpg.connect(dsn)
    try:
        enqueued_at = await producer.fetchval("SELECT clock_timestamp()")
        await Client(producer).enqueue("sleeper", "0", dedupe_key="wake", headers={"test-key": "wake"})
    finally:
        await producer.close()
    started = await wait_until(
        lambda: conn.fetchval("SELECT min(started) FROM test_runs WHERE key = 'wake'"),
        timeout=15,
        what="the job enqueued after the failover to start",
    )
    return round((started - enqueued_at).total_seconds(), 3)


async def _keys(conn: Any, sql: str, *args: Any) -> list[str]:
    return [str(row[0]) for row in await conn.fetch(sql, *args)]


async def _account(conn: Any, result: DrillResult, producers: _Producers, reader: _Reader) -> None:
    acknowledged = producers.acknowledged
    result.acknowledged_enqueues = len(acknowledged)
    result.failed_enqueue_calls = producers.failed_calls
    result.outcomes_seen_before_crash = len(reader.seen)
    known = set(await _keys(conn, "SELECT dedupe_key FROM pgqd_jobs UNION ALL SELECT dedupe_key FROM pgqd_log"))
    result.lost_enqueues = sorted(set(acknowledged) - known)
    ids = await conn.fetch("SELECT id, dedupe_key FROM pgqd_jobs UNION ALL SELECT job_id, dedupe_key FROM pgqd_log")
    now_named = {row[0]: row[1] for row in ids}
    result.ids_handed_out_twice = sorted(
        key for key, job_id in acknowledged.items() if job_id in now_named and now_named[job_id] != key
    )
    logged = {(row[0], row[1]) for row in await conn.fetch(LOGGED_OUTCOMES)}
    result.lost_outcomes = sorted({key for key, _ in reader.seen - logged})
    # A successful outcome whose handler's effect (its run, recorded as ended) is not in the database.
    result.effects_missing = await _keys(
        conn,
        "SELECT coalesce(l.dedupe_key, 'id:' || l.job_id) FROM pgqd_log AS l WHERE l.status = 'successful'"
        " AND NOT EXISTS (SELECT 1 FROM test_runs AS r WHERE r.ended IS NOT NULL AND"
        " (r.key = l.dedupe_key OR (l.dedupe_key IS NULL AND r.job_id = l.job_id))) ORDER BY 1",
    )
    result.jobs_run_twice = await _keys(
        conn, "SELECT key FROM test_runs WHERE key IS NOT NULL GROUP BY 1 HAVING count(*) > 1 ORDER BY 1"
    )
    result.ticks_fired_twice = await _keys(
        conn, "SELECT tick FROM test_runs WHERE tick IS NOT NULL GROUP BY 1 HAVING count(DISTINCT job_id) > 1"
    )
    result.jobs_left = len(
        await _keys(conn, "SELECT dedupe_key FROM pgqd_jobs WHERE dedupe_key = ANY ($1)", sorted(known))
    )
    result.jobs_logged_twice = await _keys(
        conn, "SELECT dedupe_key FROM pgqd_log WHERE dedupe_key IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
    )
    result.final_statuses = {
        row[0]: row[1] for row in await conn.fetch("SELECT status::text, count(*) FROM pgqd_log GROUP BY 1")
    }


def summary(result: DrillResult) -> str:
    """One JSON line with the figures."""
    return json.dumps(result.as_dict(), default=str)
