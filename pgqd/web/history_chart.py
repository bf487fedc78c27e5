"""The history page's charts as server-rendered SVG: jobs per time slice (stacked bars) and percentiles of run
time or queue wait (lines on a logarithmic scale, as durations span milliseconds to hours).

Only numbers and fixed words go into the SVG, and the templates escape the labels all the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

from pgqd.ops.history import Percentiles, Slice
from pgqd.web.chart import nice_ceiling
from pgqd.web.present import age

WIDTH, HEIGHT = 1160, 180
LEFT, BOTTOM, TOP, RIGHT = 56, 20, 8, 4
LABELS = 8


@dataclass(frozen=True)
class Column:
    x: float
    width: float
    # (css class, y, height) from the bottom up: succeeded, failed, other.
    parts: list[tuple[str, float, float]]
    title: str


@dataclass(frozen=True)
class Line:
    css: str
    label: str
    # Runs of consecutive slices with data, each as SVG points "x,y x,y ...".
    segments: list[str]
    # Every point (a slice with data between two without shows as a dot alone).
    dots: list[tuple[float, float]]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    gridlines: list[tuple[float, str]]
    labels: list[tuple[float, str]]
    columns: list[Column]
    lines: list[Line]
    # One hover target per slice for the lines (a transparent column with a title).
    hovers: list[Column]


def _slice_label(slices: Sequence[Slice], index: int, slice_seconds: int) -> str:
    moment = slices[index].start.astimezone(UTC)
    return f"{moment:%H:%M}" if slice_seconds < 3600 or len(slices) <= 24 else f"{moment:%a %H:%M}"


def _frame(slices: Sequence[Slice], slice_seconds: int) -> tuple[float, list[tuple[float, str]]]:
    slot = (WIDTH - LEFT - RIGHT) / max(len(slices), 1)
    every = max(1, math.ceil(len(slices) / LABELS))
    labels = [(round(LEFT + i * slot, 1), _slice_label(slices, i, slice_seconds)) for i in range(0, len(slices), every)]
    return slot, labels


def outcome_chart(slices: Sequence[Slice], slice_seconds: int) -> Chart:
    """Finished jobs per slice: succeeded, failed (exceptions and timeouts) and other (canceled, deleted)."""
    slot, labels = _frame(slices, slice_seconds)
    top = nice_ceiling(max((s.outcomes.total for s in slices), default=0) or 1)
    plot_h = HEIGHT - BOTTOM - TOP
    columns = []
    for i, s in enumerate(slices):
        base = float(TOP + plot_h)
        parts = []
        for css, jobs in (("ok", s.outcomes.succeeded), ("bad", s.outcomes.failed), ("other", s.outcomes.other)):
            height = plot_h * jobs / top
            if jobs:
                parts.append((css, round(base - height, 1), round(height, 1)))
            base -= height
        title = (
            f"{s.start.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {s.outcomes.succeeded:,} succeeded, "
            f"{s.outcomes.failed:,} failed, {s.outcomes.other:,} canceled or deleted"
        )
        columns.append(Column(round(LEFT + i * slot + 1, 1), round(max(slot - 2, 1), 1), parts, title))
    gridlines = [(round(TOP + plot_h * (1 - f), 1), f"{round(top * f):,}") for f in (0, 0.5, 1)]
    return Chart(WIDTH, HEIGHT, LEFT, gridlines, labels, columns, [], [])


def percentile_chart(slices: Sequence[Slice], slice_seconds: int, measure: str) -> Chart:
    """p50, p95 and p99 of ``measure`` ("run" or "wait") per slice, on a logarithmic scale."""
    slot, labels = _frame(slices, slice_seconds)
    values: list[Percentiles | None] = [getattr(s, measure) for s in slices]
    known = [v for v in values if v is not None]
    low = math.floor(math.log10(min((v.p50 for v in known), default=0.001)))
    high = math.ceil(math.log10(max((v.p99 for v in known), default=1.0)))
    high = max(high, low + 1)
    plot_h = HEIGHT - BOTTOM - TOP

    def y(seconds: float) -> float:
        return round(TOP + plot_h * (1 - (math.log10(seconds) - low) / (high - low)), 1)

    lines = []
    for css, name in (("p50", "p50"), ("p95", "p95"), ("p99", "p99")):
        segments: list[str] = []
        current: list[str] = []
        dots = []
        for i, v in enumerate(values):
            if v is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            dots.append((round(LEFT + (i + 0.5) * slot, 1), y(getattr(v, name))))
            current.append(f"{dots[-1][0]},{dots[-1][1]}")
        if current:
            segments.append(" ".join(current))
        lines.append(Line(css, name, segments, dots))
    hovers = []
    for i, (s, v) in enumerate(zip(slices, values, strict=True)):
        if v is None:
            continue
        title = (
            f"{s.start.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {v.jobs:,} jobs: p50 {age(v.p50)}, "
            f"p95 {age(v.p95)}, p99 {age(v.p99)}"
        )
        hovers.append(Column(round(LEFT + i * slot, 1), round(slot, 1), [], title))
    gridlines = [(y(10.0**d), age(10.0**d)) for d in range(low, high + 1)]
    return Chart(WIDTH, HEIGHT, LEFT, gridlines, labels, [], lines, hovers)
