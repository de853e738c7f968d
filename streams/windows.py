"""Board windows (contract §2) and the bucketed counts their sums come from.

* Fixed windows — `all` and the named periods — keep one running total each: an event
  adds to them for good.
* Rolling windows — `1h`, `24h`, `7d`, `30d` — are sums of buckets: minutes for `1h`,
  hours for `24h`, UTC days for `7d` and `30d`. An event touches one bucket per
  resolution; a window's sum at clock `c` takes the buckets `b > unit(c) - span`.
  A bucket becomes *due* when it leaves a window: `(b + span) * unit` ms. The worker
  re-scores an account at each of its due times (see `DecaySchedule`), which is how
  boards decay with no new events.

Metric lists everywhere are `[views, likes, uploads, events]`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.settings import DAY_MS, Period

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
ALL = "all"
ALL_DAYS = 365.0
VIEWS, LIKES, UPLOADS, EVENTS = range(4)


@dataclass(frozen=True, slots=True)
class Rolling:
    """A rolling window: the last `span` whole units of `unit_ms` (bucket resolution)."""

    id: str
    unit_ms: int
    span: int
    resolution: int  # index into WindowedCounts.buckets

    @property
    def days(self) -> float:
        return self.unit_ms * self.span / DAY_MS

    def contains(self, bucket: int, clock_ms: int) -> bool:
        return bucket > clock_ms // self.unit_ms - self.span

    def due_ms(self, bucket: int) -> int:
        """When this bucket leaves the window."""
        return (bucket + self.span) * self.unit_ms


ROLLING: tuple[Rolling, ...] = (
    Rolling("1h", MINUTE_MS, 60, 0),
    Rolling("24h", HOUR_MS, 24, 1),
    Rolling("7d", DAY_MS, 7, 2),
    Rolling("30d", DAY_MS, 30, 2),
)
#: per resolution: bucket length, and the longest span that reads it (buckets older go)
RESOLUTIONS: tuple[tuple[int, int], ...] = ((MINUTE_MS, 60), (HOUR_MS, 24), (DAY_MS, 30))
ROLLING_BY_ID = {r.id: r for r in ROLLING}


@dataclass(frozen=True, slots=True)
class Windows:
    """Every window of a deployment: rolling ones, `all`, then the named periods."""

    periods: tuple[Period, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (*(r.id for r in ROLLING), ALL, *(p.name for p in self.periods))

    def days(self, window: str) -> float:
        """Window length in days, the `d` of the index's ceilings (contract §2)."""
        if window == ALL:
            return ALL_DAYS
        if window in ROLLING_BY_ID:
            return ROLLING_BY_ID[window].days
        for period in self.periods:
            if period.name == window:
                return period.days
        raise KeyError(window)

    def fixed_containing(self, ts: int) -> tuple[str, ...]:
        """The fixed windows an event at `ts` counts in (`all` and matching periods)."""
        if not self.periods:
            return (ALL,)
        return (ALL, *(p.name for p in self.periods if p.start_ms <= ts < p.end_ms))


def bucket_floors(clock_ms: int) -> tuple[int, int, int]:
    """Per resolution, the newest bucket no rolling window reads at this clock."""
    return clock_ms // MINUTE_MS - 60, clock_ms // HOUR_MS - 24, clock_ms // DAY_MS - 30


def _empty() -> list[int]:
    return [0, 0, 0, 0]


@dataclass(slots=True)
class WindowedCounts:
    """Counts of one account (or one account's campaign) in every window."""

    #: fixed window id -> running metrics
    fixed: dict[str, list[int]] = field(default_factory=dict)
    #: per resolution (minute, hour, day): bucket number -> metrics
    buckets: tuple[dict[int, list[int]], ...] = field(default_factory=lambda: ({}, {}, {}))

    def add(self, slot: int | None, count: int, ts: int, fixed: tuple[str, ...],
            floors: tuple[int, int, int]) -> list[int] | None:
        """Count one event; `slot` is VIEWS, LIKES, UPLOADS or None (follows).

        `floors` (from `bucket_floors(clock)`) are the newest minute, hour and day that
        no window reads any more: such buckets are not kept. Returns the due times of
        the buckets this event opened (when to re-score the account), or None. This is
        the hot path: one dict lookup per resolution.
        """
        for window in fixed:
            metrics = self.fixed.get(window)
            if metrics is None:
                metrics = self.fixed[window] = [0, 0, 0, 0]
            if slot is not None:
                metrics[slot] += count
            metrics[3] += 1
        opened = None
        minutes, hours, days = self.buckets
        bucket = ts // MINUTE_MS
        if bucket > floors[0]:
            metrics = minutes.get(bucket)
            if metrics is None:
                metrics = minutes[bucket] = [0, 0, 0, 0]
                opened = [(bucket + 60) * MINUTE_MS]
            if slot is not None:
                metrics[slot] += count
            metrics[3] += 1
        bucket = ts // HOUR_MS
        if bucket > floors[1]:
            metrics = hours.get(bucket)
            if metrics is None:
                metrics = hours[bucket] = [0, 0, 0, 0]
                due = (bucket + 24) * HOUR_MS
                opened = [due] if opened is None else [*opened, due]
            if slot is not None:
                metrics[slot] += count
            metrics[3] += 1
        bucket = ts // DAY_MS
        if bucket > floors[2]:
            metrics = days.get(bucket)
            if metrics is None:
                metrics = days[bucket] = [0, 0, 0, 0]
                dues = [(bucket + 7) * DAY_MS, (bucket + 30) * DAY_MS]
                opened = dues if opened is None else opened + dues
            if slot is not None:
                metrics[slot] += count
            metrics[3] += 1
        return opened

    def sums(self, window: str, clock_ms: int) -> list[int]:
        """The window's metrics at this clock."""
        rolling = ROLLING_BY_ID.get(window)
        if rolling is None:
            return list(self.fixed.get(window) or _empty())
        total = _empty()
        floor = clock_ms // rolling.unit_ms - rolling.span
        for bucket, metrics in self.buckets[rolling.resolution].items():
            if bucket > floor:
                total[0] += metrics[0]
                total[1] += metrics[1]
                total[2] += metrics[2]
                total[3] += metrics[3]
        return total

    def prune(self, clock_ms: int) -> None:
        """Drop buckets no window will read again (the clock only moves forward)."""
        for resolution, (unit_ms, span) in enumerate(RESOLUTIONS):
            buckets = self.buckets[resolution]
            floor = clock_ms // unit_ms - span
            for bucket in [b for b in buckets if b <= floor]:
                del buckets[bucket]

    def due_times(self, clock_ms: int) -> Iterator[int]:
        """Every future time at which one of these buckets leaves a window."""
        for rolling in ROLLING:
            for bucket in self.buckets[rolling.resolution]:
                due = rolling.due_ms(bucket)
                if due > clock_ms:
                    yield due

    def to_list(self) -> list[object]:
        flat = []
        for buckets in self.buckets:
            row: list[int] = []
            for bucket, metrics in buckets.items():
                row.append(bucket)
                row.extend(metrics)
            flat.append(row)
        return [self.fixed, flat]

    @classmethod
    def from_list(cls, data: list[Any]) -> WindowedCounts:
        fixed, flat = data
        buckets = tuple({row[i]: row[i + 1:i + 5] for i in range(0, len(row), 5)}
                        for row in flat)
        return cls(fixed, buckets)


@dataclass(slots=True)
class DecaySchedule:
    """Which accounts to re-score when: a time-ordered index, not a scan of all accounts."""

    _due: dict[int, set[str]] = field(default_factory=dict)
    _times: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._times)

    def add(self, due_ms: int, account_id: str) -> None:
        accounts = self._due.get(due_ms)
        if accounts is None:
            accounts = self._due[due_ms] = set()
            heapq.heappush(self._times, due_ms)
        accounts.add(account_id)

    def add_all(self, due_times: Iterable[int], account_id: str) -> None:
        for due in due_times:
            self.add(due, account_id)

    def pop_due(self, clock_ms: int) -> set[str]:
        """Accounts with a bucket that left a window at or before `clock_ms`."""
        found: set[str] = set()
        times = self._times
        while times and times[0] <= clock_ms:
            found |= self._due.pop(heapq.heappop(times))
        return found

    @property
    def next_due(self) -> int | None:
        return self._times[0] if self._times else None
