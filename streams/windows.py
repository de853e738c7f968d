"""Which board windows an event falls in, and how long each window is for the index.

This module holds the fixed windows: `all` (every event) and the named periods of
RANKFLOW_PERIODS (`start <= ts < end`). Their sums only ever grow by events, so an
account keeps one running total per fixed window.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import Period

ALL = "all"
ALL_DAYS = 365.0


@dataclass(frozen=True, slots=True)
class FixedWindows:
    """The fixed windows of a deployment: `all` first, then the named periods."""

    periods: tuple[Period, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (ALL, *(p.name for p in self.periods))

    def days(self, window: str) -> float:
        """Window length in days, the `d` of the index's ceilings (contract §2)."""
        if window == ALL:
            return ALL_DAYS
        for period in self.periods:
            if period.name == window:
                return period.days
        raise KeyError(window)

    def containing(self, ts: int) -> tuple[str, ...]:
        """The fixed windows an event at `ts` counts in."""
        if not self.periods:
            return (ALL,)
        return (ALL, *(p.name for p in self.periods if p.start_ms <= ts < p.end_ms))
