"""Board windows, as contract §2 (Windows) defines them, and the bucketed counts their
sums come from (tests/test_windows.py::test_every_window_matches_a_brute_force_sum).

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

import hashlib
import heapq
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from streams.core.periods import DAY_MS, Period

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

    @property
    def days(self) -> float:
        return self.unit_ms * self.span / DAY_MS


ROLLING: tuple[Rolling, ...] = (
    Rolling("1h", MINUTE_MS, 60),
    Rolling("24h", HOUR_MS, 24),
    Rolling("7d", DAY_MS, 7),
    Rolling("30d", DAY_MS, 30),
)
#: per resolution (minute, hour, day): bucket length, and the spans of the windows on it
#: (longest last)
UNITS = (MINUTE_MS, HOUR_MS, DAY_MS)
SPANS = ((60,), (24,), (7, 30))
ROLLING_BY_ID = {r.id: r for r in ROLLING}


@dataclass(frozen=True, slots=True)
class Windows:
    """Every window of a deployment: rolling ones, `all`, then the named periods."""

    periods: tuple[Period, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (*(r.id for r in ROLLING), ALL, *(p.name for p in self.periods))

    def days(self, window: str) -> float:
        """Window length in days, the `d` of the index's ceilings, contract §2 (Windows)."""
        if window == ALL:
            return ALL_DAYS
        if window in ROLLING_BY_ID:
            return ROLLING_BY_ID[window].days
        for period in self.periods:
            if period.name == window:
                return period.days
        raise KeyError(window)

    def fixed_containing(self, ts: int) -> tuple[int, ...]:
        """Keys of the fixed windows an event at `ts` counts in (`all`, matching periods)."""
        if not self.periods:
            return (0,)
        return (0, *(fixed_key(p.name) for p in self.periods if p.start_ms <= ts < p.end_ms))



def bucket_floors(clock_ms: int) -> tuple[int, int, int]:
    """Per resolution, the newest bucket no rolling window reads at this clock."""
    return clock_ms // MINUTE_MS - 60, clock_ms // HOUR_MS - 24, clock_ms // DAY_MS - 30


#: ints per record: [resolution, bucket, views, likes, uploads, events]
RECORD = 6
#: the resolution code of a fixed window's running total (its "bucket" is `fixed_key`)
FIXED = 3
#: records beyond which an account's buckets are found through an index, not a scan: far
#: more than any clock keeps (about 120), so only a catch-up from a stale clock builds one
INDEXED_FROM = 256 * RECORD


@lru_cache(maxsize=256)
def fixed_key(window: str) -> int:
    """A stable number for a fixed window: 0 for `all`, a 62-bit hash of a period's name."""
    if window == ALL:
        return 0
    return int.from_bytes(hashlib.blake2b(window.encode(), digest_size=8).digest()) >> 2


@dataclass(slots=True)
class WindowedCounts:
    """Counts of one account (or one account's campaign) in every window.

    Everything lives in one flat array of 64-bit ints, six per record: the running
    totals of the fixed windows (resolution FIXED), then the minute, hour and day
    buckets in the order they were opened: compact in memory and in the changelog
    (figures in docs/performance.md). Events mostly arrive in time order, so an event's
    bucket is found by a short scan from the end, and the fixed totals by one from the
    start. A batch far ahead of the clock (an event-clock cold start over weeks of
    events) keeps every bucket until it ends: past INDEXED_FROM, a transient index
    finds them, dropped when the buckets are pruned (tests/test_windows.py).
    """

    data: array[int] = field(default_factory=lambda: array("q"))
    #: (bucket * 4 + resolution) -> offset, while the buckets are many; else None
    _index: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def add(self, slot: int | None, count: int, ts: int, fixed: tuple[int, ...],
            floors: tuple[int, int, int], events: int = 1) -> list[int] | None:
        """Count `events` events adding up to `count`, all in the buckets of `ts`.

        `slot` is VIEWS, LIKES, UPLOADS or None (follows).

        `fixed` are the keys of the fixed windows containing them
        (`Windows.fixed_containing`). `floors` (from `bucket_floors(clock)`) are the
        newest minute, hour and day that no window reads any more: such buckets are not
        kept. Returns the due times of the buckets they opened (when to re-score
        the account), or None.
        """
        data = self.data
        for key in fixed:
            at = self._find_fixed(key)
            if at < 0:
                at = len(data)
                data.extend((FIXED, key, 0, 0, 0, 0))
            if slot is not None:
                data[at + 2 + slot] += count
            data[at + 5] += events
        opened = None
        for resolution in (0, 1, 2):
            unit_ms = UNITS[resolution]
            bucket = ts // unit_ms
            if bucket <= floors[resolution]:
                continue
            at = self._find_bucket(resolution, bucket)
            if at < 0:
                at = len(data)
                data.extend((resolution, bucket, 0, 0, 0, 0))
                if self._index is not None:
                    self._index[bucket * 4 + resolution] = at
                now_unit = floors[resolution] + SPANS[resolution][-1]
                dues = [(bucket + span) * unit_ms for span in SPANS[resolution]
                        if bucket + span > now_unit]  # not already out of that window
                if dues:
                    opened = dues if opened is None else opened + dues
            if slot is not None:
                data[at + 2 + slot] += count
            data[at + 5] += events
        return opened

    def _find_fixed(self, key: int) -> int:
        data = self.data
        for at in range(0, len(data), RECORD):
            if data[at + 1] == key and data[at] == FIXED:
                return at
        return -1

    def _find_bucket(self, resolution: int, bucket: int) -> int:
        data = self.data
        if len(data) >= INDEXED_FROM:
            index = self._index
            if index is None:
                index = self._index = {data[at + 1] * 4 + data[at]: at
                                       for at in range(0, len(data), RECORD)
                                       if data[at] != FIXED}
            return index.get(bucket * 4 + resolution, -1)
        for at in range(len(data) - RECORD, -1, -RECORD):
            if data[at + 1] == bucket and data[at] == resolution:
                return at
        return -1

    def sums(self, window: str, clock_ms: int) -> list[int]:
        """The window's metrics at this clock: [views, likes, uploads, events]."""
        if window in ROLLING_BY_ID:
            return self.window_sums(Windows(), clock_ms)[window]
        at = self._find_fixed(fixed_key(window))
        return [0, 0, 0, 0] if at < 0 else self.data[at + 2:at + 6].tolist()

    def window_sums(self, windows: Windows, clock_ms: int) -> dict[str, list[int]]:
        """`sums` of every window of `windows` at this clock, in one pass over the records
        (scoring reads them all for every changed account of every batch)."""
        data = self.data
        hour, day, week, month = ROLLING  # on minute, hour, day and day buckets
        minute_floor = clock_ms // hour.unit_ms - hour.span
        hour_floor = clock_ms // day.unit_ms - day.span
        week_floor = clock_ms // week.unit_ms - week.span
        month_floor = clock_ms // month.unit_ms - month.span
        # running sums as locals, one per window and metric: faster than lists
        h0 = h1 = h2 = h3 = d0 = d1 = d2 = d3 = w0 = w1 = w2 = w3 = m0 = m1 = m2 = m3 = 0
        fixed: dict[int, list[int]] = {}
        for resolution, bucket, views, likes, uploads, events in zip(
                data[0::RECORD], data[1::RECORD], data[2::RECORD], data[3::RECORD],
                data[4::RECORD], data[5::RECORD], strict=True):
            if resolution == 0:
                if bucket > minute_floor:
                    h0 += views
                    h1 += likes
                    h2 += uploads
                    h3 += events
            elif resolution == 1:
                if bucket > hour_floor:
                    d0 += views
                    d1 += likes
                    d2 += uploads
                    d3 += events
            elif resolution == 2:
                if bucket > month_floor:
                    m0 += views
                    m1 += likes
                    m2 += uploads
                    m3 += events
                    if bucket > week_floor:
                        w0 += views
                        w1 += likes
                        w2 += uploads
                        w3 += events
            else:
                fixed[bucket] = [views, likes, uploads, events]
        sums = {hour.id: [h0, h1, h2, h3], day.id: [d0, d1, d2, d3],
                week.id: [w0, w1, w2, w3], month.id: [m0, m1, m2, m3],
                ALL: fixed.get(0) or [0, 0, 0, 0]}
        for period in windows.periods:
            sums[period.name] = fixed.get(fixed_key(period.name)) or [0, 0, 0, 0]
        return sums

    def prune(self, clock_ms: int) -> None:
        """Drop buckets no window will read again (the clock only moves forward)."""
        floors = (*bucket_floors(clock_ms), -1)  # fixed totals always stay
        data = self.data
        kept = array("q")
        for at in range(0, len(data), RECORD):
            if data[at + 1] > floors[data[at]]:
                kept.extend(data[at:at + RECORD])
        if len(kept) != len(data):
            self.data = kept
            self._index = None

    def due_times(self, clock_ms: int) -> Iterator[int]:
        """Every future time at which one of these buckets leaves a window."""
        data = self.data
        for at in range(0, len(data), RECORD):
            resolution, bucket = data[at], data[at + 1]
            if resolution == FIXED:
                continue
            for span in SPANS[resolution]:
                due = (bucket + span) * UNITS[resolution]
                if due > clock_ms:
                    yield due

    def to_list(self) -> list[int]:
        return self.data.tolist()

    @classmethod
    def from_list(cls, data: list[int]) -> WindowedCounts:
        return cls(array("q", data))


@dataclass(slots=True)
class DecaySchedule:
    """Which accounts to re-score when: a time-ordered index, not a scan of all accounts
    (tests/test_windows.py::test_the_schedule_names_every_account_whose_sums_change)."""

    _due: dict[int, set[str]] = field(default_factory=dict)
    _times: list[int] = field(default_factory=list)
    #: every account due at or before this clock has been popped (or was restored with
    #: its buckets after it); -1 before the first pop
    popped_through: int = -1

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
        self.popped_through = max(self.popped_through, clock_ms)
        return found
