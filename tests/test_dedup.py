"""Recent event ids: kept by count and by age, sealed into segments, restorable."""

from streams.core.dedup import RecentEventIds, source_ref, unpack_ref


def test_refs_pack_and_unpack():
    assert unpack_ref(source_ref(5, 123_456_789)) == (5, 123_456_789)


def test_ids_expire_only_when_old_by_both_count_and_age():
    recent = RecentEventIds(min_events=3, min_age_ms=1000)
    recent.add("a", 1)
    recent.seal(0, wall_ms=0, max_ids=10)
    for i, name in enumerate("bcd"):
        recent.add(name, 10 + i)
    recent.seal(1, wall_ms=0, max_ids=10)
    assert recent.expire(now_ms=500) == [], "young segments stay however many came after"
    assert recent.expire(now_ms=5000) == [0], "old and 3 newer ids: the first segment goes"
    assert recent.first_seen("a") is None and recent.first_seen("b") == 10
    assert recent.expire(now_ms=10_000) == [], "the newest segment always stays"


def test_too_few_newer_ids_keep_an_old_segment():
    recent = RecentEventIds(min_events=100, min_age_ms=0)
    recent.add("a", 1)
    recent.seal(0, 0, 10)
    recent.add("b", 2)
    recent.seal(1, 0, 10)
    assert recent.expire(now_ms=10**9) == []


def test_the_hard_cap_drops_oldest_segments():
    recent = RecentEventIds(min_events=10**9, min_age_ms=10**9, max_ids=4)
    for seq in range(4):
        recent.add(f"x{seq}", seq)
        recent.add(f"y{seq}", seq)
        recent.seal(seq, 0, 10)
    assert recent.expire(now_ms=0) == [0, 1]
    assert len(recent) == 4


def test_seal_splits_large_batches_and_restore_rebuilds():
    recent = RecentEventIds()
    for i in range(25):
        recent.add(f"id{i}", i)
    segments = recent.seal(7, wall_ms=5, max_ids=10)
    assert [s.seq for s in segments] == [7, 8, 9]
    assert [len(s.ids) for s in segments] == [10, 10, 5]
    assert [s.end_total for s in segments] == [10, 20, 25]
    again = RecentEventIds()
    again.restore(reversed(segments))
    assert len(again) == 25 and again.first_seen("id24") == 24
