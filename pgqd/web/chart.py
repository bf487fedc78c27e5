"""The overview's throughput chart: finished jobs per minute over the last hour, as server-rendered SVG.

Only numbers and fixed words go into the SVG, and the template escapes the labels all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WIDTH, HEIGHT = 1160, 200
LEFT, BOTTOM, TOP = 44, 20, 8


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    bad_y: float
    bad_height: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    gridlines: list[tuple[float, str]]
    labels: list[tuple[float, str]]
    succeeded: int
    failed: int


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``: the top of a chart's scale."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def throughput_chart(minutes: list[tuple[datetime, int, int]], now: datetime, span: int = 60) -> Chart:
    """``minutes``: (minute, succeeded, failed) for the minutes that had finished jobs, any order, repeats summed."""
    by_minute: dict[datetime, tuple[int, int]] = {}
    for minute, ok, bad in minutes:
        key = minute.astimezone(UTC).replace(second=0, microsecond=0)
        old_ok, old_bad = by_minute.get(key, (0, 0))
        by_minute[key] = (old_ok + ok, old_bad + bad)
    start = now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(minutes=span - 1)
    slots = [start + timedelta(minutes=i) for i in range(span)]
    peak = max((sum(by_minute.get(s, (0, 0))) for s in slots), default=0)
    top = nice_ceiling(max(peak, 1))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    slot_w = plot_w / span
    bars = []
    for i, slot in enumerate(slots):
        ok, bad = by_minute.get(slot, (0, 0))
        ok_h, bad_h = plot_h * ok / top, plot_h * bad / top
        base = TOP + plot_h
        bars.append(
            Bar(
                x=round(LEFT + i * slot_w + 1, 1),
                width=round(max(slot_w - 2, 1), 1),
                ok_y=round(base - ok_h, 1),
                ok_height=round(ok_h, 1),
                bad_y=round(base - ok_h - bad_h, 1),
                bad_height=round(bad_h, 1),
                title=f"{slot:%H:%M} UTC: {ok} succeeded, {bad} failed",
            )
        )
    gridlines = [(round(TOP + plot_h * (1 - f), 1), f"{round(top * f):,}") for f in (0, 0.5, 1)]
    labels = [(round(LEFT + i * slot_w, 1), f"{slots[i]:%H:%M}") for i in range(0, span, 10)]
    return Chart(
        WIDTH,
        HEIGHT,
        bars,
        gridlines,
        labels,
        sum(by_minute.get(s, (0, 0))[0] for s in slots),
        sum(by_minute.get(s, (0, 0))[1] for s in slots),
    )
