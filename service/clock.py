"""Injectable time: workflow code asks a Clock, never the system, so flows, tests and demos can
act "as of" any date. Calendar dates are read in the campaign's time zone (Asia/Shanghai)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = ["Clock", "SystemClock", "FixedClock", "SharedClock", "CAMPAIGN_TZ", "start_of_day",
           "local_date"]

CAMPAIGN_TZ = ZoneInfo("Asia/Shanghai")


class Clock(Protocol):
    """Anything that tells the current instant (timezone-aware, UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that stands still until moved; for tests and the simulated-campaign demo."""

    current: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self.current

    def set(self, when: datetime | date) -> None:
        """Jump to an instant, or to the start of a campaign-calendar day."""
        self.current = start_of_day(when) if not isinstance(when, datetime) else when

    def advance(self, **kwargs: float) -> None:
        """Move forward by a timedelta's keyword arguments, e.g. ``advance(days=3)``."""
        self.current += timedelta(**kwargs)


class SharedClock:
    """A FixedClock that processes share through a small file: the demo moves it, the service
    it runs in a process of its own reads it. ``set`` replaces the file whole (write, then
    rename), so a reader sees the old instant or the new one, never a mix."""

    def __init__(self, path: Path, start: datetime | None = None) -> None:
        self.path = path
        if start is not None or not path.exists():
            self.set(start or datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.fromisoformat(self.path.read_text(encoding="ascii"))

    def set(self, when: datetime | date) -> None:
        """Jump to an instant, or to the start of a campaign-calendar day."""
        instant = start_of_day(when) if not isinstance(when, datetime) else when
        if instant.tzinfo is None:
            raise ValueError(f"a shared clock needs an aware instant, not {instant!r}")
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        scratch.write_text(instant.isoformat(), encoding="ascii")
        os.replace(scratch, self.path)

    def advance(self, **kwargs: float) -> None:
        self.set(self.now() + timedelta(**kwargs))


def start_of_day(day: date, tz: ZoneInfo = CAMPAIGN_TZ) -> datetime:
    """00:00 of a calendar day in the campaign's time zone, as a UTC instant."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def end_of_day(day: date, tz: ZoneInfo = CAMPAIGN_TZ) -> datetime:
    """The instant a calendar day's deadline passes (midnight after it), as UTC."""
    return start_of_day(day + timedelta(days=1), tz)


def local_date(instant: datetime, tz: ZoneInfo = CAMPAIGN_TZ) -> date:
    """The campaign-calendar date of an instant."""
    return instant.astimezone(tz).date()
