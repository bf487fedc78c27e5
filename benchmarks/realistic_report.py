"""compare.py's second table: the realistic configuration, the fleet, the limits kept, and the cost of a limit on
an entrypoint with nothing queued; and their targets."""

from __future__ import annotations

from typing import Any

from benchmarks import limits_check
from benchmarks.runners.mix import IDLE_MIXES, REALISTIC

UNLIMITED_ONLY = " unlimited only"  # suffix of a system's name for its runs without the limited entrypoints
FIELD = "jobs_per_s"
# The jobs run within the span rated, the limited entrypoints' too, per second of it (realistic.realistic_drain).
ALL_JOBS_FIELD = "all_jobs_per_s"


def realistic_key(processes: int, batch: int) -> str:
    return f"realistic {processes}p b{batch}"


def fleet_key(processes: int) -> str:
    return f"fleet {processes}p b10"


def idle_key(processes: int, batch: int) -> str:
    return f"idle limit {processes}p b{batch}"


def ratio(figures: dict[str, dict[str, float]], mine: str, theirs: str, field: str = FIELD) -> float | None:
    """``mine``'s ``field`` over ``theirs``'s jobs per second (the rate of the unlimited entrypoints' jobs)."""
    a, b = figures.get(mine, {}).get(field), figures.get(theirs, {}).get(FIELD)
    return None if a is None or not b else a / b


def by_round(runs: dict[str, list[dict[str, float]]], mine: str, theirs: str, field: str = FIELD) -> list[float | None]:
    """``mine`` over ``theirs`` within each round (taken minutes apart at most, so on a machine whose load moves
    they compare better than the medians)."""
    if mine not in runs or theirs not in runs:
        return []
    rounds = min(len(runs[mine]), len(runs[theirs]))
    return [ratio({mine: runs[mine][i], theirs: runs[theirs][i]}, mine, theirs, field) for i in range(rounds)]


def label(key: str) -> str:
    kind, processes, batch = key.rsplit(" ", 2)
    count = int(processes[:-1])
    return f"{kind}, {count} process{'es' if count > 1 else ''}, batch {batch[1:]}"


# Column -> (system, system it is rated against, the first one's figure).
PAIRS = {
    "pgqd / PgQueuer": ("pgqd", "pgqueuer", FIELD),
    "pgqd: limited / unlimited only": ("pgqd", "pgqd" + UNLIMITED_ONLY, FIELD),
    # What the limited entrypoints cost the drain, their own jobs counted as work done: the ratio above charges
    # the drain with the time their jobs take, as it would any job's.
    "pgqd: all jobs / unlimited only": ("pgqd", "pgqd" + UNLIMITED_ONLY, ALL_JOBS_FIELD),
    "PgQueuer: limited / unlimited only": ("pgqueuer", "pgqueuer" + UNLIMITED_ONLY, FIELD),
}


def table(
    medians: dict[str, dict[str, dict[str, float]]],
    results: dict[str, dict[str, list[dict[str, float]]]],
    keys: list[str],
) -> list[dict[str, Any]]:
    """Per scenario: the medians, their ratios, and the ratios within each round."""
    rows = []
    for key in keys:
        figures, runs = medians.get(key, {}), results.get(key, {})
        rows.append(
            {
                "scenario": f"{label(key)} (unlimited entrypoints' jobs/s)",
                "figures": {name: values[FIELD] for name, values in figures.items()},
                "ratios": {name: ratio(figures, a, b, field) for name, (a, b, field) in PAIRS.items()},
                "ratios_by_round": {name: by_round(runs, a, b, field) for name, (a, b, field) in PAIRS.items()},
            }
        )
    return rows


def idle_table(
    medians: dict[str, dict[str, dict[str, float]]],
    results: dict[str, dict[str, list[dict[str, float]]]],
    keys: list[str],
) -> list[dict[str, Any]]:
    rows = []
    for key in keys:
        figures, runs = medians.get(key, {}), results.get(key, {})
        rows.append(
            {
                "scenario": label(key),
                "alone_jobs_per_s": figures.get("alone", {}).get(FIELD),
                "ratios": {variant: ratio(figures, variant, "alone") for variant in IDLE_MIXES},
                "ratios_by_round": {variant: by_round(runs, variant, "alone") for variant in IDLE_MIXES},
            }
        )
    return rows


def limits(results: dict[str, dict[str, list[dict[str, float]]]], keys: list[str]) -> list[dict[str, object]]:
    """Whether each limit held over every realistic and fleet run of each system."""
    by_system: dict[str, list[dict[str, float]]] = {}
    for key in keys:
        for system, runs in results.get(key, {}).items():
            if not system.endswith(UNLIMITED_ONLY):
                by_system.setdefault(system, []).extend(runs)
    return limits_check.verdicts(REALISTIC, by_system)


def targets(rows: list[dict[str, Any]], held: list[dict[str, object]]) -> list[dict[str, Any]]:
    found = []

    def check(name: str, value: float | None, goal: float) -> None:
        found.append({"target": name, "ratio": value, "goal": goal, "holds": None if value is None else value >= goal})

    for row in rows:
        scenario = row["scenario"].split(" (")[0]
        if scenario.startswith("realistic"):
            check(f"{scenario}: pgqd >= 2.5x PgQueuer", row["ratios"]["pgqd / PgQueuer"], 2.5)
        check(f"{scenario}: pgqd's unlimited entrypoints >= 90% of the run without limited ones",
              row["ratios"]["pgqd: limited / unlimited only"], 0.9)  # fmt: skip
    for limit in held:
        if limit["system"] == "pgqd":
            found.append({"target": f"pgqd keeps {limit['entrypoint']}'s {limit['limit']} exactly",
                          "ratio": None, "goal": None, "holds": limit["held"]})  # fmt: skip
    return found


def cell(value: float | None, suffix: str = "x") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def with_rounds(row: dict[str, Any], column: str, suffix: str) -> str:
    rounds = " / ".join(cell(r, "") for r in row["ratios_by_round"].get(column, []))
    return cell(row["ratios"][column], suffix) + (f" (rounds: {rounds})" if rounds else "")


def format_tables(rows: list[dict[str, Any]], idle: list[dict[str, Any]], held: list[dict[str, object]]) -> str:
    lines = []
    if rows:
        columns = list(rows[0]["ratios"])
        lines += ["| scenario | " + " | ".join(columns) + " | figures |", "|" + " --- |" * (len(columns) + 2)]
        for row in rows:
            figures = ", ".join(f"{name} {value:,.0f}" for name, value in row["figures"].items())
            ratios = [with_rounds(row, c, "x") for c in columns]
            lines.append(f"| {row['scenario']} | " + " | ".join(ratios) + f" | {figures} |")
    if held:
        lines += ["", "| system | entrypoint | limit | observed | held | used in full | runs |", "|" + " --- |" * 7]
        for limit in held:
            lines.append(f"| {limit['system']} | {limit['entrypoint']} | {limit['limit']} | {limit['observed']} | "
                         f"{'yes' if limit['held'] else 'NO'} | {'yes' if limit['used_in_full'] else 'no'} | "
                         f"{limit['runs']:,.0f} |")  # fmt: skip
    if idle:
        variants = list(IDLE_MIXES)
        lines += ["", "| one entrypoint's drain, pgqd | " + " | ".join(variants) + " |", "|" + " --- |" * 4]
        for row in idle:
            alone = "-" if row["alone_jobs_per_s"] is None else f"1.00 ({row['alone_jobs_per_s']:,.0f} jobs/s)"
            ratios = [with_rounds(row, v, "") for v in variants[1:]]
            lines.append(f"| {row['scenario']} | {alone} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)
