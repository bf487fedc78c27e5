"""Durations ("250ms", "30s", "5m", "7d") and rates ("10/s", "300/m") as users write them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "250ms", "30s", "1.5m", "7d". Raises ValueError with the accepted forms."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f'invalid duration {text!r}: use a number and a unit: "250ms", "30s", "5m", "2h", "7d"')
    return float(match[1]) * _DURATION_UNITS[match[2]]


def format_duration(seconds: float) -> str:
    """The shortest exact form of a duration, the inverse of ``parse_duration``."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    milliseconds = seconds * 1000
    return f"{int(milliseconds)}ms" if milliseconds.is_integer() else f"{seconds:g}s"


@dataclass(frozen=True)
class Rate:
    """At most ``count`` jobs started per ``period`` seconds across the fleet, with bursts up to ``burst``."""

    count: float
    period: float = 1.0
    burst: float = 0.0

    def __post_init__(self) -> None:
        if self.count <= 0 or self.period <= 0:
            raise ValueError("a rate needs a positive count and period")
        if self.burst == 0.0:
            # By default a full period's allowance may start at once, but never less than one job.
            object.__setattr__(self, "burst", max(self.count, 1.0))
        elif self.burst < 1:
            raise ValueError("a rate's burst must be at least 1")

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        period = format_duration(self.period)
        if period[0] == "1" and period[1:].isalpha():
            period = period[1:]
        return f"{self.count:g}/{period}"


def parse_rate(text: str) -> Rate:
    """A rate such as "10/s", "300/m", "5/2s" (five per two seconds)."""
    match = _RATE.fullmatch(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f'invalid rate {text!r}: use a positive count per unit: "10/s", "300/m", "5/2s"')
    multiple = float(match[2]) if match[2] else 1.0
    if multiple <= 0:
        raise ValueError(f"invalid rate {text!r}: the period must be positive")
    return Rate(float(match[1]), multiple * _DURATION_UNITS[match[3]])
