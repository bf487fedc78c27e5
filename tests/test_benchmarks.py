"""Each benchmark script runs end to end at a tiny scale and prints its JSON (figures are not asserted here:
speed is measured by running the scripts, see docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from benchmarks.limits_check import max_overlap, rate_excess, read_runs
from benchmarks.private_cluster import PGBIN
from benchmarks.runners.mix import RECORDS_ENV
from tests.support.daemon import free_port

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

SMOKE_RUNS = {
    "enqueue": ["--jobs", "2000", "--batch", "1000", "--single", "50"],
    "drain": ["--mode", "inprocess", "--jobs", "500", "--batch", "10", "100"],
    "steady": ["--seconds", "2", "--processes", "1"],
    "latency": ["--jobs", "20", "--spacing", "0.01"],
    "growth": ["--jobs", "300", "--ineligible", "0", "2000", "--kind", "deferred", "other"],
    "claim_cost": ["--claims", "5"],
    "deep_drain": ["--jobs", "500", "--processes", "1", "--batch", "10"],
    "limits_lifted": ["--jobs", "300", "--processes", "1", "--batch", "10"],
    "limited_only": ["--rate", "200", "--seconds", "1"],
    "log_scale": [
        "--rows",
        "20000",
        "--min-rows",
        "1000",
        "--days",
        "2",
        "--flushes",
        "5",
        "--repeat",
        "2",
        "--disorder-rows",
        "5000",
        "--deleted",
        "500",
    ],
    "web_pages": ["--live", "2000", "--log", "2000", "--requests", "2", "--port", str(free_port())],
}


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_script_runs_and_prints_json(script: str, pg_server: str) -> None:
    command = [sys.executable, "-m", f"benchmarks.{script}", "--server", pg_server, "--runs", "1", "--json"]
    result = subprocess.run(
        command + SMOKE_RUNS[script], cwd=REPO, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document["results"]
    assert document["environment"]["postgres"]["server_version"]
    for row in document["results"]:
        assert all(value is not None for value in row.values())


def test_drain_through_the_daemon_runs(pg_server: str) -> None:
    command = [sys.executable, "-m", "benchmarks.drain", "--server", pg_server, "--runs", "1", "--json"]
    args = ["--mode", "daemon", "--processes", "1", "--batch", "10", "--jobs", "500"]
    result = subprocess.run(command + args, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])["results"]
    assert rows[0]["jobs_per_s"] > 0


def test_compare_runs_pgqd_against_the_ceiling_and_writes_ratios(pg_server: str, tmp_path: Path) -> None:
    # The peers are installed only when compare.py is run by hand; here pgqd and the plain-SQL ceiling run.
    output = tmp_path / "compare.json"
    command = [sys.executable, "-m", "benchmarks.compare", "--server", pg_server, "--quick", "--systems", "pgqd",
               "ceiling", "--jobs", "300", "--processes", "1", "--batch", "10", "--single", "20",
               "--steady-seconds", "1", "--latency-jobs", "10", "--output", str(output),
               "--scenarios", "enqueue", "drain", "steady", "latency"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "drain 1p b10" in result.stderr  # a progress line per scenario
    document = json.loads(output.read_text())
    rows = {row["scenario"]: row for row in document["table"]}
    drain = rows["drain, 1 process, batch 10 (jobs/s)"]
    assert drain["figures"]["pgqd"] > 0
    assert drain["figures"]["ceiling"] > 0
    assert drain["ratios"]["ceiling"] == drain["figures"]["pgqd"] / drain["figures"]["ceiling"]
    assert document["medians"]["drain 1p b10"]["pgqd"]["finished"] == 300
    assert rows["pickup latency p99 (ms, lower is better)"]["figures"]["pgqd"] > 0
    assert rows["steady state under a flooding producer (completed jobs/s)"]["figures"]["pgqd"] > 0
    assert "| drain, 1 process, batch 10 (jobs/s) |" in result.stdout


def test_compare_runs_the_realistic_mix_and_checks_its_limits(pg_server: str, tmp_path: Path) -> None:
    output = tmp_path / "compare.json"
    command = [sys.executable, "-m", "benchmarks.compare", "--server", pg_server, "--systems", "pgqd", "--rounds", "1",
               "--jobs", "400", "--processes", "1", "--batch", "10", "--fleet-processes", "2",
               "--scenario", "realistic", "fleet", "idle-limit", "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(output.read_text())
    realistic = document["medians"]["realistic 1p b10"]
    assert realistic["pgqd"]["finished"] == realistic["pgqd unlimited only"]["finished"] == 360
    # The jobs run within the span rated, per second of it: the limited entrypoints' jobs too, where they run.
    assert realistic["pgqd"]["all_jobs_per_s"] >= realistic["pgqd"]["jobs_per_s"]
    assert realistic["pgqd unlimited only"]["all_jobs_per_s"] == realistic["pgqd unlimited only"]["jobs_per_s"]
    assert "| pgqd: all jobs / unlimited only |" in result.stdout
    assert {row["entrypoint"] for row in document["limits"]} == {"billing", "crm_sync", "sms"}
    assert all(row["held"] for row in document["limits"])
    assert set(document["medians"]["idle limit 2p b10"]) == {"alone", "+3 unlimited", "+3, one limited"}
    assert "| fleet, 2 processes, batch 10 (unlimited entrypoints' jobs/s) |" in result.stdout


def test_soak_measures_capacity_loads_and_drains(pg_server: str, tmp_path: Path) -> None:
    # A private cluster too, when this machine has PostgreSQL's server binaries: the soak's "autovacuum on".
    clusters = ["server", *(["private-autovacuum-on"] if (PGBIN / "initdb").exists() else [])]
    output = tmp_path / "soak.json"
    command = [sys.executable, "-m", "benchmarks.soak", "--server", pg_server, "--clusters", *clusters,
               "--capacity-jobs", "300", "--capacity-rounds", "3", "--phase-seconds", "2", "--sample-every", "1",
               "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(output.read_text())["runs"]
    assert [run["cluster"] for run in runs] == clusters
    for run in runs:
        assert run["capacity_per_s"] > 0
        # The capacity is the median of its drains.
        assert len(run["capacity_drains_per_s"]) == 3
        assert run["capacity_per_s"] == sorted(run["capacity_drains_per_s"])[1]
        assert run["left"] == 0
        assert run["low"]["finished"] > 0
        assert run["samples"][-1]["jobs_indexes_bytes"] > 0
        # The machine's CPU, split between the producer and the rest: shares of all cores, adding up to 1.
        shares = run["high"]["cpu"]
        assert shares["producer_share"] > 0
        assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)
        # The capacity drain of 300 jobs may end within one tick of the kernel's clock: then it has no shares.
        assert not run["capacity_cpu"] or sum(run["capacity_cpu"].values()) == pytest.approx(1.0, abs=0.01)
    assert [run["autovacuum"] for run in runs[1:]] == ["on"] * (len(runs) - 1)


def test_ready_head_measures_what_claimed_jobs_cost_until_a_vacuum(pg_server: str, tmp_path: Path) -> None:
    output = tmp_path / "head.json"
    command = [sys.executable, "-m", "benchmarks.ready_head", "--server", pg_server, "--jobs", "20000",
               "--steps", "2000", "8000", "--probe-claims", "20", "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    first, _, deep, vacuumed = json.loads(output.read_text())["rows"]
    assert [first["claimed_since_vacuum"], deep["claimed_since_vacuum"]] == [0, 8000]
    # The entries of 8,000 claimed jobs lie at the head of the ready index until the vacuum removes them.
    assert deep["read_buffers"] > first["read_buffers"] + 10
    # A read bounded below by the first queued job's id does not step over them.
    assert deep["from_start_buffers"] < deep["locking_read_buffers"]
    assert vacuumed["vacuum_s"] >= 0
    assert vacuumed["read_buffers"] < deep["read_buffers"]
    assert "| jobs claimed since the vacuum |" in result.stdout


@pytest.mark.skipif(not (PGBIN / "initdb").exists(), reason="needs PostgreSQL's server binaries for a private cluster")
def test_statement_costs_count_the_claims_statements_by_drain(tmp_path: Path) -> None:
    output = tmp_path / "costs.json"
    command = [sys.executable, "-m", "benchmarks.statement_costs", "--jobs", "2000", "--top", "1000", "--width", "3000",
               "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    without, with_limits = json.loads(output.read_text())["drains"]
    assert [without["limited"], with_limits["limited"]] == [False, True]

    def statements(drain: dict[str, Any]) -> list[str]:
        return [row["statement"] for row in drain["statements"]]

    # The statements inside the claim function count one by one: the probe of the limited entrypoints' work runs
    # in the drain with limits only.
    assert any("FROM work AS w" in statement for statement in statements(with_limits))
    assert not any("FROM work AS w" in statement for statement in statements(without))
    assert any("WITH candidates AS" in statement for statement in statements(without))


def test_limit_checks_count_overlaps_and_the_bucket_bound() -> None:
    assert max_overlap([(0.0, 1.0), (1.0, 2.0)]) == 1
    assert max_overlap([(0.0, 2.0), (1.0, 3.0), (0.5, 3.0)]) == 3
    # 10 a second, bursts of 10: 10 claims at once are allowed, an 11th not before 0.1 s later.
    assert rate_excess([0.0] * 10 + [0.1], 10.0, 10.0) == pytest.approx(0.0)
    assert rate_excess([0.0] * 10 + [0.05], 10.0, 10.0) == pytest.approx(0.5)
    assert rate_excess([0.0, 1.0, 2.0], 10.0, 10.0) < -1


RECORDS_FROM_CHILDREN = """
import os, sys
from benchmarks.runners import mix
mix.record("parent", 1.0, 2.0, 0.5)  # the parent's descriptor, opened before the forks
children = []
for child in range(4):
    pid = os.fork()
    if pid == 0:
        for run in range(500):
            mix.record(f"child{child}", float(run), run + 0.5, run - 0.5)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def test_limited_runs_of_several_processes_are_recorded_whole(tmp_path: Path) -> None:
    records = tmp_path / "records"
    command = [sys.executable, "-c", RECORDS_FROM_CHILDREN]
    env = {**os.environ, RECORDS_ENV: str(records)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = read_runs(records)  # a torn or mixed line would not parse
    assert Counter(run.entrypoint for run in runs) == {"parent": 1, **{f"child{n}": 500 for n in range(4)}}
    assert all(run.ended == run.started + 0.5 for run in runs if run.entrypoint != "parent")


def test_engine_cost_drains_the_memory_backend() -> None:
    command = [sys.executable, "-m", "benchmarks.engine_cost", "--jobs", "500", "--runs", "1", "--batch", "10"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("batch 10: ")
    assert "µs of CPU per job" in result.stdout


@pytest.mark.parametrize(("mix", "measured"), [(None, 400), ("realistic", 360), ("unlimited-only", 360)])
def test_profile_drain_reads_the_cpu_of_a_drain_of_no_op_jobs_or_of_the_realistic_mix(
    mix: str | None, measured: int, pg_server: str
) -> None:
    command = [sys.executable, "-m", "benchmarks.profile_drain", "--server", pg_server, "--json"]
    command += ["--jobs", "400", "--processes", "1", "--batch", "10", *(["--mix", mix] if mix else [])]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(result.stdout.strip().splitlines()[-1])["results"]
    # Rated on the unlimited entrypoints' jobs: the realistic mix puts a tenth of 400 on its limited ones.
    assert row["jobs"] == measured
    assert row["jobs_per_s"] > 0
    assert {"workers_us_per_job", "backends_us_per_job"} <= row.keys()
    assert 0 <= row["other_jobs"] <= (40 if mix == "realistic" else 0)


_SIGNALLED_SCRIPT = """
import asyncio, sys
from benchmarks.common import run_until_signalled

async def main() -> None:
    if sys.argv[1] == "exit":
        sys.exit(0)
    try:
        print("waiting", flush=True)
        await asyncio.sleep(60)
    finally:
        print("cleaned", flush=True)

run_until_signalled(main())
"""


def test_a_script_exits_as_its_main_says_unless_a_signal_stops_it() -> None:
    command = [sys.executable, "-c", _SIGNALLED_SCRIPT]
    exited = subprocess.run([*command, "exit"], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert (exited.returncode, exited.stderr) == (0, "")

    waiting = subprocess.Popen([*command, "wait"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert waiting.stdout is not None
        assert waiting.stdout.readline() == "waiting\n"
        waiting.terminate()
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 1
    assert out == "cleaned\n"
    assert "stopped by a signal" in err
