"""Sending policy: quiet hours per channel, and how long a blast takes once they are counted."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from dispatcher.config import Settings


@dataclass(frozen=True)
class QuietHours:
    """A nightly window (local time) in which no message leaves; messages wait, not drop."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, start: str, end: str, zone: str) -> QuietHours:
        """From 'HH:MM' strings and a time-zone name."""
        return cls(time.fromisoformat(start), time.fromisoformat(end), ZoneInfo(zone))

    def is_quiet(self, moment: datetime) -> bool:
        """True when `moment` falls inside the window (which may span midnight)."""
        local = moment.astimezone(self.zone).time()
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_open(self, moment: datetime) -> datetime:
        """`moment` itself when sending is allowed, else the end of the window it falls in."""
        if not self.is_quiet(moment):
            return moment
        local = moment.astimezone(self.zone)
        opening = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if opening <= local:
            opening += timedelta(days=1)
        return opening.astimezone(moment.tzinfo)

    def next_close(self, moment: datetime) -> datetime:
        """When the next quiet window starts after an allowed `moment`."""
        local = moment.astimezone(self.zone)
        closing = local.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        if closing <= local:
            closing += timedelta(days=1)
        return closing.astimezone(moment.tzinfo)

    def finish_time(self, start: datetime, messages: int, rate: float) -> datetime:
        """When `messages` sent at `rate` per second from `start` are all out, waiting out nights."""
        remaining = messages / rate
        moment = self.next_open(start)
        while remaining > 0:
            window = (self.next_close(moment) - moment).total_seconds() if self.start != self.end else remaining
            step = min(window, remaining)
            moment += timedelta(seconds=step)
            remaining -= step
            if remaining > 0:
                moment = self.next_open(moment)
        return moment

    def open_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds between `start` and `end` in which messages may leave."""
        total, moment = 0.0, self.next_open(start)
        while moment < end:
            closing = end if self.start == self.end else min(self.next_close(moment), end)
            total += (closing - moment).total_seconds()
            moment = self.next_open(closing)
        return total

    def sendable(self, start: datetime, deadline: datetime, rate: float) -> int:
        """How many messages sent at `rate` per second from `start` are out by `deadline` (`finish_time`'s inverse)."""
        # A hair of slack: 600 s at 0.01/s is 6 messages, not 5.999… of them.
        return max(0, math.floor(self.open_seconds(start, deadline) * rate + 1e-9))


NO_QUIET_HOURS = ("00:00", "00:00")


def quiet_hours(settings: Settings, channel: str, urgent: bool = False) -> QuietHours:
    """The quiet window a blast on `channel` keeps; none for an urgent one where `urgent_in_quiet_hours` allows.

    `zalo_then_sms` keeps the SMS window: its fallback must reach people at SMS hours, and
    Zalo's own window (which Zalo enforces 22:00–06:00 anyway) is no wider by default.
    """
    if urgent and settings.policy.urgent_in_quiet_hours:
        return QuietHours.parse(*NO_QUIET_HOURS, settings.app.timezone)
    own = "zalo" if channel == "zalo" else "sms"
    start, end = settings.policy.quiet_window(own)
    return QuietHours.parse(start, end, settings.app.timezone)


def open_channels(settings: Settings, channels: tuple[str, ...], now: datetime) -> tuple[str, ...]:
    """The blast channels that may send at `now`."""
    return tuple(c for c in channels if not quiet_hours(settings, c).is_quiet(now))
