"""Rolling windows against a brute-force reference, with random events and clock moves."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import windows as windows_module
from streams.core.periods import parse_periods
from streams.core.windows import (
    LIKES,
    ROLLING,
    UPLOADS,
    VIEWS,
    DecaySchedule,
    WindowedCounts,
    Windows,
    bucket_floors,
)
from tests.reference import in_window

T0 = 1_700_000_000_000
PERIODS = parse_periods("p=2023-11-10/2023-11-20")
WINDOWS = Windows(PERIODS)
SLOTS = {"view": 0, "like": 1, "upload": 2, "follow": None}

events = st.lists(st.tuples(
    st.integers(-40 * 86_400_000, 2 * 86_400_000),   # ts offset from the clock
    st.sampled_from(sorted(SLOTS)),
    st.integers(-5, 50).filter(bool),
), max_size=60)
steps = st.lists(st.tuples(events, st.integers(0, 3 * 86_400_000)), min_size=1, max_size=6)


def brute_force(seen, window, clock):
    periods = {p.name: p for p in PERIODS}
    total = [0, 0, 0, 0]
    for ts, kind, count in seen:
        if in_window(ts, window, clock, periods):
            if SLOTS[kind] is not None:
                total[SLOTS[kind]] += count
            total[3] += 1
    return total


@settings(max_examples=300, deadline=None)
@given(steps)
def test_every_window_matches_a_brute_force_sum(step_list):
    counts = WindowedCounts()
    seen = []
    clock = T0
    for batch, advance in step_list:
        for offset, kind, count in batch:
            ts = clock + offset
            counts.add(SLOTS[kind], count, ts, WINDOWS.fixed_containing(ts),
                       bucket_floors(clock))
            seen.append((ts, kind, count))
        clock += advance
        if advance % 2:
            counts.prune(clock)  # pruning never changes a sum
        for window in WINDOWS.ids:
            assert counts.sums(window, clock) == brute_force(seen, window, clock), window
        assert counts.window_sums(WINDOWS, clock) == {w: counts.sums(w, clock)
                                                      for w in WINDOWS.ids}
        restored = WindowedCounts.from_list(counts.to_list())
        assert all(restored.sums(w, clock) == counts.sums(w, clock) for w in WINDOWS.ids)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(0, 40 * 86_400_000))
def test_the_schedule_names_every_account_whose_sums_change(batch, advance):
    """Between due times no rolling sum changes; at each one the account is re-scored."""
    counts = WindowedCounts()
    schedule = DecaySchedule()
    for offset, kind, count in batch:
        ts = T0 + offset
        schedule.add_all(counts.add(SLOTS[kind], count, ts, (), bucket_floors(T0)) or (), "acct")
    checkpoints = sorted({T0, T0 + advance, *(t for t in counts.due_times(T0)
                                              if t <= T0 + advance)})
    before = {w.id: counts.sums(w.id, T0) for w in ROLLING}
    for clock in checkpoints[1:]:
        due = schedule.pop_due(clock)
        now = {w.id: counts.sums(w.id, clock) for w in ROLLING}
        if now != before:
            assert due == {"acct"}, f"sums changed at {clock} but nobody was due"
        before = now
    assert schedule.pop_due(T0 + advance) == set()


def test_window_lengths_for_the_index():
    assert [WINDOWS.days(w) for w in WINDOWS.ids] == [1 / 24, 1, 7, 30, 365, 10]


def test_window_boundaries_are_whole_units():
    clock = 1_700_000_000_000  # 22:13:20 UTC
    minute_start = clock // 60_000 * 60_000
    counts = WindowedCounts()
    oldest_in = minute_start - 59 * 60_000  # the oldest minute still in `1h`
    counts.add(0, 1, oldest_in, (), bucket_floors(clock))
    counts.add(0, 10, oldest_in - 1, (), bucket_floors(clock))  # the minute before: out of `1h`
    assert counts.sums("1h", clock)[0] == 1
    assert counts.sums("1h", minute_start + 60_000 - 1)[0] == 1
    assert counts.sums("1h", minute_start + 60_000)[0] == 0, "leaves at the next minute"
    assert counts.sums("24h", minute_start + 60_000)[0] == 11


def test_many_buckets_are_found_through_an_index_that_gives_the_same_counts(monkeypatch):
    # an event-clock cold start: weeks of events in one batch at clock 0, out of order
    rng = random.Random(7)
    base = 1_700_000_000_000
    events = [(rng.choice([VIEWS, LIKES, UPLOADS, None]), rng.randint(1, 5),
               base + rng.randrange(0, 35 * 86_400_000)) for _ in range(3_000)]

    def counted(indexed_from: int) -> windows_module.WindowedCounts:
        monkeypatch.setattr(windows_module, "INDEXED_FROM", indexed_from)
        counts = windows_module.WindowedCounts()
        for slot, count, ts in events:
            counts.add(slot, count, ts, (0,), bucket_floors(0))
        return counts

    indexed_from = windows_module.INDEXED_FROM
    scanned, indexed = counted(10**9), counted(indexed_from)
    assert indexed._index is not None and scanned._index is None
    assert indexed.data == scanned.data
    clock = base + 35 * 86_400_000
    assert indexed.window_sums(Windows(), clock) == scanned.window_sums(Windows(), clock)
    for counts in (indexed, scanned):
        counts.prune(clock)
        counts.add(VIEWS, 1, clock, (0,), bucket_floors(clock))
    assert indexed._index is None, "the index is dropped once the buckets are pruned"
    assert indexed.data == scanned.data
