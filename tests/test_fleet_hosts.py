"""Three hosts in network namespaces, each running the real daemon against one PostgreSQL, survive a partition, a
slow and lossy link, the SIGKILL of a whole daemon and a skewed clock: limits hold fleet-wide, every schedule tick
fires once, late outcomes are dropped, and nothing is lost or stuck (benchmarks/fleet_drills.py is the long
form; docs/reliability.md has its figures)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fleet_drills import FleetRun
from tests.support.netns import Fleet, fleet, missing_tools

pytestmark = pytest.mark.slow

WORKER_TIMEOUT = 4.0
# A dead or cut-off host's jobs come back once its heartbeat is older than worker_timeout, and the other daemons
# look every worker_timeout / 2 (docs/reliability.md); 2 s more for the claim and the start of the run.
FIRST_RERUN_BOUND = 1.5 * WORKER_TIMEOUT + 2.0
# The last of them may wait for the others (a dead worker's jobs may run one at a time, each once the worker's
# other jobs ended): per job, its run (1 s at most), the wait for the others (1 s at most) and a margin.
PER_JOB = 2.5


@pytest.fixture(scope="module")
def hosts() -> Iterator[Fleet]:
    missing = missing_tools(skew=True)
    if missing:
        pytest.skip(f"a fleet of network namespaces needs {', '.join(missing)}")
    with fleet() as built:
        yield built


@pytest.fixture
async def fleet_run(hosts: Fleet, tmp_path: Path) -> AsyncIterator[FleetRun]:
    run = FleetRun(hosts, tmp_path, f"fleet_{uuid.uuid4().hex[:8]}", worker_timeout=WORKER_TIMEOUT)
    try:
        await run.start()
        await run.run_for(2)
        yield run
    finally:
        await run.close()


async def finished(run: FleetRun) -> dict[str, Any]:
    await run.run_for(1)
    await run.finish()
    report = await run.report()
    print(json.dumps(report))  # the figures, with -s
    assert report["violations"] == [], report
    assert report["exit_codes"] == [0] * len(run.fleet.hosts), report
    assert report["limited_max_at_once"] == report["concurrency_limit"], "the limit was never used in full"
    assert report["metered_most_claims_in_window"]["1s"] > report["rate_limit_per_s"], "the rate limit never bound"
    assert report["ticks"] >= 5, report
    return report


def assert_rerun_within_bound(fault: dict[str, Any]) -> None:
    assert fault["runs_interrupted"] >= 1, f"the drill interrupted no run, so it proved nothing: {fault}"
    assert fault["first_rerun_after_s"] <= FIRST_RERUN_BOUND, fault
    assert fault["last_rerun_after_s"] <= FIRST_RERUN_BOUND + PER_JOB * fault["runs_interrupted"], fault


async def test_partitioned_host_has_its_late_outcomes_dropped_and_rejoins(fleet_run: FleetRun) -> None:
    host = fleet_run.fleet.hosts[0]
    await fleet_run.partition(host, hold=2 * WORKER_TIMEOUT)
    report = await finished(fleet_run)
    [fault] = report["faults"]
    assert_rerun_within_bound(fault)
    assert fault["late_outcomes_dropped"] >= 1, f"no run finished while cut off: {fault}"


async def test_slow_lossy_link_loses_nothing_and_runs_nothing_twice(fleet_run: FleetRun) -> None:
    host = fleet_run.fleet.hosts[1]
    await fleet_run.degrade(host, seconds=8, delay_ms=100, loss=0.01)
    report = await finished(fleet_run)
    [fault] = report["faults"]
    assert fault["runs_interrupted"] == 0, "a slow link was taken for a dead host"
    assert report["degraded_host_runs"][0] > 0, "the slow host ran nothing"


async def test_killed_host_daemon_has_its_jobs_run_again_elsewhere(fleet_run: FleetRun) -> None:
    host = fleet_run.fleet.hosts[2]
    await fleet_run.kill(host)
    report = await finished(fleet_run)
    [fault] = report["faults"]
    assert_rerun_within_bound(fault)


async def test_host_with_a_skewed_clock_fires_no_tick_twice_or_never(fleet_run: FleetRun) -> None:
    host = fleet_run.fleet.hosts[0]
    await fleet_run.skew(host, offset=20, seconds=6)
    report = await finished(fleet_run)
    [fault] = report["faults"]
    assert fault["runs_interrupted"] == 0, fault
