"""Named periods: fixed event-time intervals that are board windows, contract §2 (Windows).

Pure: parsed from `RANKFLOW_PERIODS` by the settings, used by the windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.events import ID_PATTERN

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Period:
    """A named fixed event-time interval `start_ms <= ts < end_ms` (a board window)."""

    name: str
    start_ms: int
    end_ms: int

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS


def parse_periods(text: str) -> tuple[Period, ...]:
    """Parse `name=YYYY-MM-DD/YYYY-MM-DD,...` (UTC dates, end exclusive)."""
    periods: list[Period] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, span = item.partition("=")
        start_text, sep2, end_text = span.partition("/")
        if not sep or not sep2:
            raise ValueError(f"{item!r} is not name=YYYY-MM-DD/YYYY-MM-DD")
        if not ID_PATTERN.fullmatch(name) or name in ("1h", "24h", "7d", "30d", "all"):
            raise ValueError(f"period name {name!r} must match {ID_PATTERN.pattern} "
                             "and differ from the rolling windows")
        try:
            start = datetime.fromisoformat(start_text.strip()).replace(tzinfo=UTC)
            end = datetime.fromisoformat(end_text.strip()).replace(tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"period {name!r}: {exc}") from None
        if end <= start:
            raise ValueError(f"period {name!r} ends before it starts")
        if any(p.name == name for p in periods):
            raise ValueError(f"period {name!r} is given twice")
        periods.append(Period(name, int(start.timestamp() * 1000), int(end.timestamp() * 1000)))
    return tuple(periods)
