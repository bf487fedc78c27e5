"""pgqd side by side with PgQueuer, procrastinate and a plain-SQL ceiling, in one run on one server.

    .venv/bin/python -m benchmarks.compare [--rounds 3] [--jobs 20000] [--quick]
    .venv/bin/python -m benchmarks.compare --scenario realistic fleet idle-limit --systems pgqd pgqueuer

The first table has one entrypoint and no limits (scenarios enqueue, drain, steady, latency); the second the
realistic configuration of benchmarks/runners/mix.py (realistic, fleet, idle-limit; see benchmarks/realistic.py).

Rounds are interleaved: each round runs every scenario for every system (in an order that rotates from
round to round) before the next round starts, so the drift of a shared machine lands on all of them alike;
the figures are medians over the rounds, and only the ratios between systems of one run mean anything.
Every system runs in a fresh database of its own on the same server. The peers are installed on the first
run into their own virtualenvs under benchmarks/.peers/ (see peer_envs.py). Writes the results as JSON
(default benchmarks/results/compare-<date>.json) and prints the table of ratios; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import compare_report, realistic, realistic_report, scenarios
from benchmarks.common import DEFAULT_SERVER, concurrency_for, environment, run_until_signalled
from benchmarks.realistic_report import UNLIMITED_ONLY
from benchmarks.runners.mix import IDLE_MIXES, LIMITED_SHARE, REALISTIC, WORK_S
from benchmarks.systems import SYSTEMS
from pgqd.daemon.logs import configure_logging

RESULTS = Path(__file__).resolve().parent / "results"
ALL_SYSTEMS = ["pgqd", "pgqueuer", "procrastinate", "ceiling"]
ALL_SCENARIOS = ["enqueue", "drain", "steady", "latency", "realistic", "fleet", "idle-limit"]
LIMITED_SYSTEMS = ("pgqd", "pgqueuer")  # the systems with fleet-wide limits, which run the realistic mix
IDLE_PROCESSES = 2  # worker processes of the idle-limit drains


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("PGQD_BENCH_DSN", DEFAULT_SERVER), help="maintenance DSN")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain and per batched enqueue (20,000)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 round, 5,000 jobs, short windows")
    p.add_argument("--systems", nargs="+", choices=ALL_SYSTEMS, default=ALL_SYSTEMS)
    p.add_argument("--scenarios", "--scenario", nargs="+", choices=ALL_SCENARIOS, default=ALL_SCENARIOS)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="drain: worker processes (1 2)")
    p.add_argument("--batch", type=int, nargs="+", default=[10, 100], help="drain: batch sizes (10 100)")
    p.add_argument("--fleet-processes", type=int, default=8, help="fleet: worker processes at batch 10 (8)")
    p.add_argument("--single", type=int, default=500, help="jobs enqueued one per call (500)")
    p.add_argument("--drain-cap", type=float, default=10.0, help="seconds a drain may run before it is rated (10)")
    p.add_argument("--steady-seconds", type=float, default=10.0, help="length of the flooding window (10)")
    p.add_argument("--latency-jobs", type=int, default=200, help="single jobs timed for pickup latency (200)")
    p.add_argument("--spacing", type=float, default=0.02, help="seconds between the latency jobs (0.02)")
    p.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/compare-<date>.json)")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # new defaults; explicit options still win
        p.set_defaults(rounds=1, jobs=5_000, single=200, drain_cap=5.0, steady_seconds=3.0, latency_jobs=50)
    return p.parse_args(argv)


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Step:
    """One scenario of a round: its results' key, who takes it (systems or variants), how one of them runs it."""

    key: str
    takers: list[str]
    run: Callable[[str], Awaitable[dict[str, float]]]


def plan(args: argparse.Namespace) -> list[Step]:
    """The scenarios of a round, in order."""
    queues = [s for s in args.systems if s != "ceiling"]
    limited_peers = [s for s in queues if s in LIMITED_SYSTEMS]
    steps: list[Step] = []
    if "enqueue" in args.scenarios:
        steps.append(
            Step("enqueue", queues, lambda s: scenarios.enqueue(SYSTEMS[s], args.server, args.jobs, args.single))
        )
    if "drain" in args.scenarios:
        for processes in args.processes:
            for batch in args.batch:

                def drain(s: str, p: int = processes, b: int = batch) -> Awaitable[dict[str, float]]:
                    if s == "ceiling":
                        return scenarios.ceiling(args.server, args.jobs, p, b)
                    return scenarios.drain(SYSTEMS[s], args.server, args.jobs, p, b, concurrency_for(b), args.drain_cap)

                takers = queues + (["ceiling"] if "ceiling" in args.systems else [])
                steps.append(Step(compare_report.drain_key(processes, batch), takers, drain))
    if "steady" in args.scenarios:
        steps.append(
            Step("steady", queues, lambda s: scenarios.steady(SYSTEMS[s], args.server, args.steady_seconds, 2, 10))
        )
    if "latency" in args.scenarios:
        steps.append(
            Step(
                "latency",
                queues,
                lambda s: scenarios.latency(SYSTEMS[s], args.server, args.latency_jobs, args.spacing, 10),
            )
        )
    mixes = [(realistic_report.realistic_key(p, b), p, b, ["pgqd"]) for p in args.processes for b in args.batch]
    mixes = mixes if "realistic" in args.scenarios else []
    if "fleet" in args.scenarios:
        mixes.append((realistic_report.fleet_key(args.fleet_processes), args.fleet_processes, 10, limited_peers))
    for key, processes, batch, without in mixes:
        if limited_peers:

            def mixed(s: str, p: int = processes, b: int = batch) -> Awaitable[dict[str, float]]:
                system, limited = s.removesuffix(UNLIMITED_ONLY), not s.endswith(UNLIMITED_ONLY)
                return realistic.realistic_drain(SYSTEMS[system], args.server, args.jobs, p, b, args.drain_cap, limited)

            steps.append(Step(key, limited_peers + [s + UNLIMITED_ONLY for s in without if s in queues], mixed))
    if "idle-limit" in args.scenarios and "pgqd" in queues:
        for batch in args.batch:

            def idle(variant: str, b: int = batch) -> Awaitable[dict[str, float]]:
                return realistic.idle_limit_drain(args.server, args.jobs, IDLE_PROCESSES, b, args.drain_cap, variant)

            steps.append(Step(realistic_report.idle_key(IDLE_PROCESSES, batch), list(IDLE_MIXES), idle))
    return steps


async def run_rounds(args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, float]]]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    steps = plan(args)
    for round_number in range(args.rounds):
        for step in steps:
            # The order rotates so that no taker always runs first (or right after the heaviest one); the
            # ceiling, which is no queue, comes last.
            queues = [t for t in step.takers if t != "ceiling"]
            shift = round_number % len(queues) if queues else 0
            for name in queues[shift:] + queues[:shift] + [t for t in step.takers if t == "ceiling"]:
                began = time.monotonic()
                result = await step.run(name)
                results.setdefault(step.key, {}).setdefault(name, []).append(result)
                shown = ", ".join(f"{k} {v:,.2f}" if k.endswith("_ms") else f"{k} {v:,.0f}" for k, v in result.items())
                progress(
                    f"round {round_number + 1}/{args.rounds} {step.key:<12} {name:<13} {shown} "
                    f"({time.monotonic() - began:.1f}s)"
                )
    return results


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rounds": args.rounds,
        "jobs": args.jobs,
        "enqueue_batch": scenarios.ENQUEUE_BATCH,
        "single_enqueue_jobs": args.single,
        "drain_processes": args.processes,
        "drain_batches": args.batch,
        "drain_cap_s": args.drain_cap,
        "concurrency": {str(b): concurrency_for(b) for b in sorted({*args.batch, 10})},
        "steady": {"processes": 2, "batch": 10, "seconds": args.steady_seconds, "producer_batch": 100},
        "latency": {"processes": 1, "batch": 10, "jobs": args.latency_jobs, "spacing_s": args.spacing},
        "rates_from": {name: SYSTEMS[name].tables.where for name in args.systems if name in SYSTEMS},
        "realistic": {
            "entrypoints": [asdict(e) for e in REALISTIC],
            "limited_share_of_jobs": LIMITED_SHARE,
            "limited_handler_work_s": WORK_S,
            "unlimited_only": "the same five unlimited entrypoints and their jobs, without the limited ones",
            "without_rate_limit": "a rate-limited entrypoint is served unlimited and given no jobs "
            + ", ".join(n for n in args.systems if n in SYSTEMS and not SYSTEMS[n].has_rate_limit),
            "fleet_processes": args.fleet_processes,
        },
        "idle_limit": {
            "processes": IDLE_PROCESSES,
            "mixes": {k: [asdict(e) for e in v] for k, v in IDLE_MIXES.items()},
        },
    }


async def main(argv: list[str] | None = None) -> None:
    configure_logging("warning", "json")
    args = parse_args(argv)
    date = datetime.date.today().isoformat()
    load_before = os.getloadavg()
    versions = {name: SYSTEMS[name].version() for name in args.systems if name in SYSTEMS}  # installs the peers
    progress(f"compare: {', '.join(f'{k} {v}' for k, v in versions.items())}; load {load_before[0]:.2f}")
    results = await run_rounds(args)
    medians = compare_report.medians(results)
    rows = [row for row in compare_report.rows(args.processes, args.batch) if row.scenario in medians]
    table = compare_report.ratio_table(medians, rows)
    found = compare_report.targets(medians, rows)
    mixed_keys = [key for key in medians if key.startswith(("realistic", "fleet"))]
    second = realistic_report.table(medians, results, mixed_keys)
    limits = realistic_report.limits(results, mixed_keys)
    idle = realistic_report.idle_table(medians, results, [key for key in medians if key.startswith("idle limit")])
    found += realistic_report.targets(second, limits)
    document = {
        "benchmark": "compare",
        "date": date,
        "command": " ".join(["python -m benchmarks.compare", *sys.argv[1:]]),
        "environment": {**await environment(args.server), "load_before": load_before, "load_after": os.getloadavg()},
        "versions": versions,
        "settings": settings(args),
        "table": table,
        "realistic_table": second,
        "limits": limits,
        "idle_limit_table": idle,
        "targets": found,
        "medians": medians,
        "runs": results,
    }
    output = args.output or RESULTS / f"compare-{date}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    if table:
        print(compare_report.format_table(table, date) + "\n")
    if second or idle:
        print(realistic_report.format_tables(second, idle, limits) + "\n")
    print(compare_report.format_targets(found))
    load_after = document["environment"]["load_after"]
    print(f"\n1-minute load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after. JSON: {output}")


if __name__ == "__main__":
    run_until_signalled(main())
