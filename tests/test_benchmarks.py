"""Each benchmark script runs end to end at a tiny scale and prints its JSON (figures are not asserted here:
speed is measured by running the scripts, see docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
