"""Rank history samples: ticks, ring slots, records and ranks (no Redis)."""

from streams.api.rank_samples import RECORD, STEPS, ranked

T = 1_700_000_123_456
FAST, SLOW = STEPS["10s"], STEPS["10m"]


def ring_with(step, *records):
    """A ring as Redis holds it after SETRANGE of each (tick, rank, score)."""
    ring = bytearray()
    for tick, rank, score in records:
        offset = step.offset(tick)
        ring.extend(b"\0" * max(0, offset + RECORD.size - len(ring)))
        ring[offset:offset + RECORD.size] = step.record(tick, rank, score)
    return bytes(ring)


def test_ticks_are_the_time_floored_to_the_step_so_two_recorders_name_the_same_one():
    assert FAST.tick(T) == 1_700_000_120_000 == FAST.tick(1_700_000_129_999)
    assert SLOW.tick(T) == 1_699_999_800_000
    assert FAST.offset(FAST.tick(T)) == FAST.offset(T)


def test_a_ring_holds_a_day_at_10_s_and_30_days_at_10_min_and_no_more():
    assert (FAST.slots, SLOW.slots) == (8640, 4320)
    assert FAST.ring_bytes == 8640 * 14 and SLOW.ring_bytes == 4320 * 14
    tick = FAST.tick(T)
    offsets = {FAST.offset(tick + n * FAST.ms) for n in range(FAST.slots)}
    assert len(offsets) == FAST.slots and max(offsets) == FAST.ring_bytes - RECORD.size
    assert FAST.offset(tick + FAST.keep_ms) == FAST.offset(tick)  # a day on: the same slot


def test_points_are_the_records_inside_the_span_oldest_first():
    tick = FAST.tick(T)
    ring = ring_with(FAST, (tick - FAST.keep_ms + FAST.ms, 5, 1.5), (tick, 1, 900.25),
                     (tick - FAST.ms, 2, 899.0))
    assert FAST.points(ring, T) == [(tick - FAST.keep_ms + FAST.ms, 1.5, 5),
                                    (tick - FAST.ms, 899.0, 2), (tick, 900.25, 1)]
    # a second later in the next tick, the oldest record is out of the span
    later = T + FAST.ms
    assert [p[0] for p in FAST.points(ring, later)] == [tick - FAST.ms, tick]
    assert FAST.points(b"", T) == []


def test_a_record_overwritten_a_day_later_shows_only_the_new_tick():
    tick = FAST.tick(T)
    ring = ring_with(FAST, (tick, 3, 10.0), (tick + FAST.keep_ms, 4, 11.0))
    assert FAST.points(ring, tick + FAST.keep_ms) == [(tick + FAST.keep_ms, 11.0, 4)]


def test_campaign_views_keep_their_integer_value():
    tick = SLOW.tick(T)
    ring = ring_with(SLOW, (tick, 1, 12_500_000_017.0))
    assert SLOW.points(ring, T) == [(tick, 12_500_000_017.0, 1)]


def test_ranks_are_competition_ranks_per_board():
    tops = {("24h", "all"): [("a", 9.5), ("b", 9.5), ("c", 7.0)],
            ("1h", "cat:police"): [("c", 3.0), ("a", 1.0)]}
    assert ranked(tops) == [("24h", "all", "a", 1, 9.5), ("24h", "all", "b", 1, 9.5),
                            ("24h", "all", "c", 3, 7.0), ("1h", "cat:police", "c", 1, 3.0),
                            ("1h", "cat:police", "a", 2, 1.0)]
