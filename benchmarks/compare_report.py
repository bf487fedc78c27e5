"""compare.py's results: medians over rounds, the ratio table, the targets of the hot-path work, and JSON."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

LABELS = {"pgqd": "pgqd", "pgqueuer": "PgQueuer", "procrastinate": "procrastinate", "ceiling": "ceiling"}
PEERS = ("pgqueuer", "procrastinate", "ceiling")


@dataclass(frozen=True)
class Row:
    scenario: str  # key of the results
    field: str  # figure within each run's result
    label: str
    higher_is_better: bool = True


def drain_key(processes: int, batch: int) -> str:
    return f"drain {processes}p b{batch}"


def rows(processes: list[int], batches: list[int]) -> list[Row]:
    drains = [
        Row(drain_key(p, b), "jobs_per_s", f"drain, {p} process{'es' if p > 1 else ''}, batch {b} (jobs/s)")
        for p in processes
        for b in batches
    ]
    return [
        Row("enqueue", "batched_per_s", "batched enqueue, 1,000 per call (jobs/s)"),
        Row("enqueue", "single_per_s", "single enqueue (jobs/s)"),
        *drains,
        Row("steady", "completed_per_s", "steady state under a flooding producer (completed jobs/s)"),
        Row("latency", "p50_ms", "pickup latency p50 (ms, lower is better)", higher_is_better=False),
        Row("latency", "p99_ms", "pickup latency p99 (ms, lower is better)", higher_is_better=False),
    ]


def medians(results: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """scenario -> system -> field -> median over the rounds."""
    return {
        scenario: {
            system: {field: statistics.median(run[field] for run in runs) for field in runs[0]}
            for system, runs in by_system.items()
            if runs
        }
        for scenario, by_system in results.items()
    }


def ratio(figures: dict[str, dict[str, float]], row: Row, peer: str) -> float | None:
    mine, theirs = figures.get("pgqd", {}).get(row.field), figures.get(peer, {}).get(row.field)
    if mine is None or not theirs:
        return None
    return mine / theirs


def ratio_table(medians_: dict[str, dict[str, dict[str, float]]], table_rows: list[Row]) -> list[dict[str, Any]]:
    table = []
    for row in table_rows:
        figures = medians_.get(row.scenario, {})
        table.append(
            {
                "scenario": row.label,
                "figures": {system: values[row.field] for system, values in figures.items() if row.field in values},
                "ratios": {peer: ratio(figures, row, peer) for peer in PEERS if ratio(figures, row, peer) is not None},
            }
        )
    return table


def targets(medians_: dict[str, dict[str, dict[str, float]]], table_rows: list[Row]) -> list[dict[str, Any]]:
    """The goals of the hot-path work, each with the measured ratio and whether it holds (None: not measured)."""

    def check(name: str, row: Row, peer: str, goal: float, at_most: bool = False) -> dict[str, Any]:
        value = ratio(medians_.get(row.scenario, {}), row, peer)
        holds = None if value is None else (value <= goal if at_most else value >= goal)
        return {"target": name, "ratio": value, "goal": goal, "holds": holds}

    found = []
    for row in table_rows:
        if row.scenario.startswith("drain"):
            found.append(check(f"{row.scenario}: pgqd >= 2.5x PgQueuer", row, "pgqueuer", 2.5))
        elif row.field == "completed_per_s":
            found.append(check("steady state: pgqd >= 2.5x PgQueuer", row, "pgqueuer", 2.5))
        elif row.field == "p99_ms":
            found.append(check("pickup p99: pgqd no worse than PgQueuer", row, "pgqueuer", 1.0, at_most=True))
        elif row.field == "batched_per_s":
            found.append(check("batched enqueue: pgqd >= 2.5x PgQueuer", row, "pgqueuer", 2.5))
    for row in table_rows:
        if row.scenario == drain_key(2, 100):
            found.append(check("drain 2p b100: pgqd >= 60% of the plain-SQL ceiling", row, "ceiling", 0.6))
    return found


def figure(value: float, ms: bool) -> str:
    return f"{value:.2f}" if ms else f"{value:,.0f}"


def format_table(table: list[dict[str, Any]], date: str) -> str:
    header = ["scenario", *(f"pgqd / {LABELS[p]}" for p in PEERS), f"figures on {date}"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for entry in table:
        ms = "(ms" in entry["scenario"]
        ratios = [f"{entry['ratios'][p]:.2f}x" if p in entry["ratios"] else "-" for p in PEERS]
        figures = ", ".join(f"{LABELS[s]} {figure(v, ms)}" for s, v in entry["figures"].items())
        lines.append("| " + " | ".join([entry["scenario"], *ratios, figures]) + " |")
    return "\n".join(lines)


def format_targets(found: list[dict[str, Any]]) -> str:
    lines = []
    for t in found:
        verdict = {True: "holds", False: "does not hold", None: "not measured"}[t["holds"]]
        value = "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        lines.append(f"- {t['target']}: {value} ({verdict})")
    return "\n".join(lines)
