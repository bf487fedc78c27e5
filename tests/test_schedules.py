"""Cron schedules: exactly once per tick across daemons, misfire policies, DST, and `pgqd schedules`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from pgqd import ManualClock, MemoryBackend
from pgqd.backend.base import Backend
from pgqd.backend.postgres import PostgresBackend
from pgqd.cron import next_tick
from pgqd.daemon.worker.duties import keep_doing
from pgqd.daemon.worker.scheduler import Scheduler, ScheduleSpec, definitions, plan_firing
from pgqd.models import ScheduleState
from tests.support.cli import run_pgqd
from tests.support.daemon import Daemon, daemon_config
from tests.support.daemon_app import CREATE_RUNS
from tests.support.waiting import wait_until

OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)


def state(cron: str, next_run: datetime, misfire: str = "coalesce") -> ScheduleState:
    return ScheduleState("s", cron, "UTC", "e", None, 0, True, misfire, next_run, None, None, None)


def daily_0230_oslo(start: datetime, days: int) -> list[datetime]:
    ticks, current = [], start
    for _ in range(days):
        current = next_tick("30 2 * * *", "Europe/Oslo", current)
        ticks.append(current.astimezone(OSLO))
    return ticks


def test_daily_0230_oslo_fires_once_on_the_spring_forward_day() -> None:
    ticks = daily_0230_oslo(datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
    assert [t.day for t in ticks] == [28, 29, 30, 31]
    assert (ticks[0].hour, ticks[0].minute, ticks[0].utcoffset()) == (2, 30, timedelta(hours=1))
    assert (ticks[1].hour, ticks[1].minute) == (3, 30)  # 02:30 does not exist on the 29th
    assert (ticks[2].hour, ticks[2].minute, ticks[2].utcoffset()) == (2, 30, timedelta(hours=2))


def test_daily_0230_oslo_fires_once_on_the_fall_back_day() -> None:
    ticks = daily_0230_oslo(datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert [t.day for t in ticks] == [25, 26, 27]  # 02:30 happens twice on the 25th; it fires once
    assert [t.utcoffset() for t in ticks] == [timedelta(hours=2), timedelta(hours=1), timedelta(hours=1)]
    assert all((t.hour, t.minute) == (2, 30) for t in ticks)


def test_six_fields_mean_seconds() -> None:
    start = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert next_tick("* * * * * */15", "UTC", start) == datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)


def test_a_tick_a_little_late_fires_normally() -> None:
    firing = plan_firing(state("* * * * *", NOW - timedelta(seconds=30)), NOW)
    assert firing.ticks == [NOW - timedelta(seconds=30)]
    assert firing.next_run == datetime(2026, 5, 1, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(("misfire", "expected"), [("coalesce", 1), ("skip", 0), ("all", 6)])
def test_misfire_policy_after_five_minutes_down(misfire: str, expected: int) -> None:
    firing = plan_firing(state("* * * * *", datetime(2026, 5, 1, 11, 55, tzinfo=UTC), misfire), NOW)
    assert len(firing.ticks) == expected
    assert firing.next_run == datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    if misfire == "coalesce":
        assert firing.ticks == [datetime(2026, 5, 1, 12, 0, tzinfo=UTC)]  # the latest missed tick


async def scheduled_jobs(backend: Backend) -> dict[str, int]:
    """How many jobs each schedule has enqueued, read from the jobs' headers."""
    counts: dict[str, int] = {}
    if isinstance(backend, PostgresBackend):
        async with backend._db.acquire() as conn:
            texts = [row[0] for row in await conn.fetch("SELECT headers::text FROM pgqd_jobs")]
    else:
        texts = [job.headers for job in backend.jobs.values()]  # type: ignore[attr-defined]
    for text in texts:
        name = json.loads(text or "{}").get("pgqd-schedule")
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_misfire_policies_on_stored_schedules_after_a_gap(backend: Backend) -> None:
    specs = [
        ScheduleSpec("coalesced", "* * * * *", "e", misfire="coalesce"),
        ScheduleSpec("skipped", "* * * * *", "e", misfire="skip"),
        ScheduleSpec("every", "* * * * *", "e", misfire="all"),
    ]
    now = datetime.now(UTC)
    await backend.sync_schedules(definitions(specs, now))
    # Five minutes of downtime: move next_run back, as if the ticks since then were missed.
    gap = now.replace(second=0, microsecond=0) - timedelta(minutes=5)
    for s in await backend.schedule_states():
        assert await backend.fire_schedule(s.name, s.next_run, gap, []) == []
    await Scheduler(backend, specs).fire_due(datetime.now(UTC))
    counts = await scheduled_jobs(backend)
    assert counts.get("coalesced") == 1
    assert "skipped" not in counts
    assert counts.get("every") == 6  # the five missed minutes and the current one
    assert all(s.next_run > now for s in await backend.schedule_states())


async def test_a_tick_fires_once_when_two_schedulers_see_it_due(backend: Backend) -> None:
    spec = ScheduleSpec("race", "* * * * * *", "e")
    await backend.sync_schedules(definitions([spec], datetime.now(UTC) - timedelta(seconds=2)))
    first, second = Scheduler(backend, [spec]), Scheduler(backend, [spec])
    later = datetime.now(UTC)
    await asyncio.gather(first.fire_due(later), second.fire_due(later))
    assert first.fired + second.fired == 1


async def test_a_restart_keeps_next_run_and_a_changed_cron_resets_it(backend: Backend) -> None:
    now = datetime.now(UTC)
    await backend.sync_schedules(definitions([ScheduleSpec("n", "0 3 * * *", "e")], now - timedelta(days=2)))
    kept = (await backend.schedule_states())[0].next_run
    await backend.sync_schedules(definitions([ScheduleSpec("n", "0 3 * * *", "e")], now))
    assert (await backend.schedule_states())[0].next_run == kept
    await backend.sync_schedules(definitions([ScheduleSpec("n", "0 4 * * *", "e")], now))
    assert (await backend.schedule_states())[0].next_run.hour == 4
    await backend.sync_schedules([])
    assert await backend.schedule_states() == []


@pytest.fixture
def two_daemons(db_dsn: str, tmp_path: Path) -> Iterator[list[Daemon]]:
    config = daemon_config(
        processes=1,
        extra='\n[schedules.every_second]\ncron = "* * * * * *"\nentrypoint = "sleeper"\npayload = "0"\n',
    )
    daemons = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.toml"
        path.write_text(config)
        daemons.append(Daemon(path, db_dsn))
    yield daemons
    for daemon in daemons:
        daemon.stop()


@pytest.mark.slow
async def test_two_daemons_fire_each_tick_exactly_once(db_dsn: str, two_daemons: list[Daemon]) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute(CREATE_RUNS)
        for daemon in two_daemons:
            daemon.start().wait_ready()
        await asyncio.sleep(10)
        ticks = [row[0] for row in await conn.fetch("SELECT tick FROM test_runs ORDER BY tick")]
    finally:
        await conn.close()
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
    instants = sorted(datetime.fromisoformat(t) for t in ticks)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(instants)]
    assert len(instants) >= 9
    assert set(gaps) == {1.0}, "a tick was missed"
    assert any(daemon.has_event("schedule fired") for daemon in two_daemons)


async def test_pgqd_schedules_lists_next_and_last_runs(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        spec = ScheduleSpec("nightly", "0 3 * * *", "report", timezone="Europe/Oslo")
        await PostgresBackend(conn).sync_schedules(definitions([spec], datetime.now(UTC)))
    finally:
        await conn.close()
    result = run_pgqd("schedules", "--dsn", db_dsn)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:4] == ["name", "cron", "timezone", "entrypoint"]
    assert row.startswith("nightly")
    assert "Europe/Oslo" in row
    listed = json.loads(run_pgqd("schedules", "--dsn", db_dsn, "--json").stdout)
    assert listed[0]["cron"] == "0 3 * * *"
    assert listed[0]["last run"] == "-"


async def test_a_schedule_the_database_moved_back_to_a_fired_tick_is_reported_and_fires_again(backend: Backend) -> None:
    spec = ScheduleSpec("lost", "* * * * * *", "e")
    await backend.sync_schedules(definitions([spec], datetime.now(UTC) - timedelta(seconds=2)))
    scheduler = Scheduler(backend, [spec])
    due = (await backend.schedule_states())[0].next_run
    await scheduler.fire_due(datetime.now(UTC))
    assert scheduler.fired == 1
    # The database forgets the firing, as a failover to a standby that had not received it does.
    moved = (await backend.schedule_states())[0].next_run
    assert await backend.fire_schedule("lost", moved, due, []) == []
    await scheduler.fire_due(datetime.now(UTC))
    assert scheduler.rewinds == 1
    assert scheduler.fired == 2
    # Reported once: the firings after it move the schedule forward again.
    await scheduler.fire_due(datetime.now(UTC) + timedelta(seconds=2))
    assert scheduler.rewinds == 1


async def test_ticks_are_due_by_the_storage_clock_not_the_hosts() -> None:
    # The storage's clock runs an hour ahead of this host's: the scheduler must fire by the storage's, as a
    # daemon whose host clock is off must (a fleet's daemons share one clock: the database's).
    clock = ManualClock(start=time.time() + 3600, running=True)
    backend = MemoryBackend(clock=clock)
    task = asyncio.create_task(keep_doing(Scheduler(backend, [ScheduleSpec("s", "* * * * * *", "e")])))
    try:

        async def fired() -> datetime | None:
            return (await backend.schedule_states())[0].last_run if await backend.schedule_states() else None

        last_run = await wait_until(fired, timeout=10, what="a tick fired")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert abs((last_run - await backend.current_time()).total_seconds()) < 5
