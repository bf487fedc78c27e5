"""The judges of the fleet drills (tests/support/fleet_checks.py) catch what they are there to catch: a run
outside any fault, a tick fired twice, early or never, a late outcome that was kept, a run that never ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.fleet_checks import (
    Fault,
    Run,
    decided_by_last_run,
    most_in_window,
    rerun_report,
    run_intervals,
    tick_report,
)

T0 = datetime(2026, 12, 6, 3, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(run_id: int, job_id: int, host: str, start: float, end: float | None, tick: str | None = None) -> Run:
    return Run(run_id, job_id, "plain", host, at(start), at(start), None if end is None else at(end), tick)


def test_most_in_window_counts_a_closed_window() -> None:
    moments = [at(0), at(0.5), at(1.0), at(1.01), at(5)]
    assert most_in_window(moments, 1.0) == 3
    assert most_in_window(moments, 0.1) == 2


def test_a_run_cut_short_by_a_kill_ends_at_the_kill_and_any_other_open_run_is_reported() -> None:
    kill = Fault("kill", "h3", at(5), at(5))
    intervals, unexplained = run_intervals([run(1, 1, "h3", 4, None), run(2, 2, "h1", 4, None)], [kill])
    assert intervals == [(at(4), at(5))]
    assert [r.run_id for r in unexplained] == [2]


def test_a_rerun_is_explained_only_by_a_fault_on_the_first_runs_host_while_it_ran() -> None:
    partition = Fault("partition", "h1", at(10), at(20))
    runs = [
        run(1, 1, "h1", 9.5, 10.5),  # ended while cut off: its outcome could not be written
        run(2, 1, "h2", 16, 17),
        run(3, 2, "h2", 9.5, 10.5),  # another host: nothing explains running job 2 again
        run(4, 2, "h3", 16, 17),
    ]
    report = rerun_report(runs, [partition])
    assert report["unexplained_reruns"] == [2]
    assert report["per_fault"][0] == [6.0]
    assert report["dropped_outcomes"][0] == 1


def test_the_kept_outcome_must_be_the_last_runs() -> None:
    runs = [run(1, 1, "h1", 0, 1), run(2, 1, "h2", 5, 6), run(3, 2, "h1", 0, 1)]
    assert decided_by_last_run(runs, {1: {"run": 2}, 2: {"run": 3}}) == []
    assert decided_by_last_run(runs, {1: {"run": 1}, 2: {"run": 3}}) == [1]


def test_ticks_fired_twice_missing_or_early_are_reported() -> None:
    ticks = [at(s).isoformat() for s in (0, 1, 3)]
    runs = [run(1, 1, "h1", 0, 0, ticks[0]), run(2, 2, "h1", 1, 1, ticks[1]), run(3, 3, "h2", 1, 1, ticks[1])]
    report = tick_report(runs, {4: ticks[2]}, {1: at(0), 2: at(1), 3: at(1), 4: at(2.5)})
    assert report["fired_twice"] == [ticks[1]]
    assert report["missing"] == [at(2).isoformat()]
    assert report["fired_early"] == [ticks[2]]
