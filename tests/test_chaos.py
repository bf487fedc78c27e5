"""A short chaos run: killed workers, killed connections, a database restart and crash, a killed supervisor and a
failover lose no job and leave none stuck, and a poison job among them is given up while the daemon lives on
(benchmarks/chaos.py at a small scale; the full run's figures are in docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_short_chaos_run_loses_nothing() -> None:
    command = [sys.executable, "-m", "benchmarks.chaos", "--json"]
    # The jobs a killed worker held run again at once; those present in two kills run alone, and the worker
    # running such a suspect is killed too (once per suspect).
    args = ["--jobs", "600", "--work-ms", "100", "--kill-every", "1.5", "--seconds", "150"]
    result = subprocess.run(command + args, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, json.dumps(report, indent=2) + result.stderr[-2000:]
    assert report["verdict"] == "ok"
    # 600 ordinary jobs, 1 poison job, and 20 workflows of 12 steps.
    assert report["jobs_finished"] == 601 + 240
    assert report["final_statuses"] == {"successful": 840, "exception": 1}
    assert report["workflows"] == {
        "steps": 240,
        "steps_not_successful": 0,
        "steps_left_waiting": 0,
        "steps_started_before_a_parent_ended": 0,
    }
    [poison] = report["poison"]["ended"]
    assert poison["error_type"] == "pgqd.WorkerLost"
    assert poison["error_message"].startswith("killed its worker process (")
    assert poison["error_message"].endswith("in death 3 of 3 allowed: given up")
    # Two deaths among other jobs made it a suspect; then three alone.
    assert 3 <= poison["runs"] <= 5
    assert report["ordinary_jobs_given_up"] == 0
    assert report["jobs_lost"] == 0
    assert report["jobs_stuck_picked"] == 0
    assert report["successful_without_a_recorded_run"] == 0
    assert report["workers_killed"] >= 1
    assert sorted({f["kind"] for f in report["faults"]}) == [
        "crash_postgres",
        "failover",
        "kill_supervisor",
        "restart_postgres",
        "terminate_connections",
    ]
    assert report["last_daemon_exit_code"] == 0
