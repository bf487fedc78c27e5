"""Cron expressions read in a time zone: the ticks of a schedule, for the scheduler and for anyone showing one."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter


def next_tick(cron: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after``, as an aware UTC time.

    Ticks are wall-clock times in the schedule's zone. Across a DST change: a tick inside the hour that is
    skipped fires once, moved by the jump (02:30 becomes 03:30 when clocks go from 02:00 to 03:00); the hour that
    happens twice runs its ticks once, in its first pass.
    """
    zone = ZoneInfo(timezone)
    wall = croniter(cron, after.astimezone(zone).replace(tzinfo=None))
    while True:
        candidate: datetime = wall.get_next(datetime)
        instant = candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > after:
            return instant


def ticks_between(cron: str, timezone: str, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Ticks ``start`` (included, when it is one) up to ``end`` (included), at most ``limit``."""
    found = [start] if start <= end else []
    current = start
    while len(found) < limit:
        current = next_tick(cron, timezone, current)
        if current > end:
            break
        found.append(current)
    return found
