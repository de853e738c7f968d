"""Recent event ids: kept by count and by age, sealed into segments, restorable."""

import logging
import random
from collections import deque

import orjson

from streams.core.dedup import DedupCut, RecentEventIds, Segment, source_ref, unpack_ref
from streams.ops.settings import Settings
from streams.worker.metrics import DedupCutWatch, WorkerMetrics


def test_refs_pack_and_unpack():
    assert unpack_ref(source_ref(5, 123_456_789)) == (5, 123_456_789)


def test_ids_expire_only_when_old_by_both_count_and_age():
    recent = RecentEventIds(min_events=3, min_age_ms=1000)
    recent.add("a", 1)
    recent.seal(0, wall_ms=0)
    for i, name in enumerate("bcd"):
        recent.add(name, 10 + i)
    recent.seal(1, wall_ms=0)
    assert recent.expire(now_ms=500) == [], "young segments stay however many came after"
    assert recent.expire(now_ms=5000) == [0], "old and 3 newer ids: the first segment goes"
    assert recent.first_seen("a") is None and recent.first_seen("b") == 10
    assert recent.expire(now_ms=10_000) == [], "the newest segment always stays"


def test_too_few_newer_ids_keep_an_old_segment():
    recent = RecentEventIds(min_events=100, min_age_ms=0)
    recent.add("a", 1)
    recent.seal(0, 0)
    recent.add("b", 2)
    recent.seal(1, 0)
    assert recent.expire(now_ms=10**9) == []


def test_the_hard_cap_drops_oldest_segments():
    recent = RecentEventIds(min_events=10**9, min_age_ms=10**9, max_ids=4)
    for seq in range(4):
        recent.add(f"x{seq}", seq)
        recent.add(f"y{seq}", seq)
        recent.seal(seq, 0)
    assert recent.expire(now_ms=0) == [0, 1]
    assert len(recent) == 4


def test_seal_splits_large_batches_and_restore_rebuilds():
    recent = RecentEventIds(segment_ids=10)
    for i in range(25):
        recent.add(f"id{i}", i)
    segments = recent.seal(7, wall_ms=5)
    assert [s.seq for s, _ in segments] == [7, 8, 9]
    assert [len(ids) for _, ids in segments] == [10, 10, 5]
    assert [len(s) for s, _ in segments] == [10, 10, 5]
    assert [s.end_total for s, _ in segments] == [10, 20, 25]
    again = RecentEventIds()
    again.restore(reversed([s for s, _ in segments]))
    assert len(again) == 25 and again.first_seen("id24") == 24


def test_the_hash_table_agrees_with_a_dict_through_growth_deletes_and_restores():
    """Random adds, seals and expiries against a plain dict of what must be remembered."""
    rng = random.Random(13)
    recent = RecentEventIds(min_events=0, min_age_ms=0, max_ids=3000, segment_ids=16)
    model: dict[str, int] = {}
    live: deque[tuple[int, list[tuple[str, int]]]] = deque()
    seq = ref = 0
    for batch in range(400):
        added = []
        for _ in range(rng.randrange(0, 40)):
            event_id = f"e{rng.randrange(20_000)}"
            ref += 1
            if recent.first_ref(event_id, ref) == ref:
                assert event_id not in model
                model[event_id] = ref
                added.append((event_id, ref))
        sealed = recent.seal(seq, wall_ms=batch)
        seq += len(sealed)
        live.extend((s.seq, [e for e in ids if e[0]]) for s, ids in sealed)
        for gone in recent.expire(now_ms=batch):
            s, ids = live.popleft()
            assert s == gone
            for event_id, r in ids:
                assert model.pop(event_id) == r
        if batch % 97 == 0:  # a restart: rebuilt from the records of the live segments
            recent = RecentEventIds(min_events=0, min_age_ms=0, max_ids=3000, segment_ids=16)
            recent.restore(Segment.of(s, 0, ids, 0) for s, ids in live)
        assert len(recent) == len(model) <= 3000 + 40
        for i in range(0, 20_000, 7):
            assert recent.first_seen(f"e{i}") == model.get(f"e{i}")


def test_a_cut_window_is_reported_once_per_episode_with_the_window_it_held():
    recent = RecentEventIds(min_events=0, min_age_ms=10_000, max_ids=4)
    for t in range(6):  # two ids a second over a cap of 4: the window holds ~2 s
        recent.add(f"a{t}", 2 * t)
        recent.add(f"b{t}", 2 * t + 1)
        recent.seal(t, wall_ms=t * 1000)
        recent.expire(now_ms=t * 1000)
        cut = recent.take_cut()
        if t < 2:
            assert cut is None
        else:
            assert cut == DedupCut(ids=2, new_episode=t == 2, window_ms=1000)
    assert recent.take_cut() is None, "taken: reported once"
    # quiet for longer than the window: ids expire by age, the episode ends
    recent.seal(6, wall_ms=20_000)
    assert recent.expire(now_ms=20_000) == [4, 5] and recent.take_cut() is None
    for seq in (7, 8):  # a later cut is a new episode
        for i in range(3):
            recent.add(f"c{seq}.{i}", 100 * seq + i)
        recent.seal(seq, wall_ms=21_000 + seq)
    assert recent.expire(now_ms=21_008) == [6, 7]
    assert recent.take_cut() == DedupCut(ids=3, new_episode=True, window_ms=0)


def test_the_worker_counts_every_cut_id_and_logs_each_episode_once(caplog):
    metrics = WorkerMetrics(worker="w")
    watch = DedupCutWatch(metrics, max_ids=4)
    with caplog.at_level(logging.WARNING, logger="streams.worker.metrics"):
        watch.observe(3, DedupCut(ids=2, new_episode=True, window_ms=81_500))
        watch.observe(3, DedupCut(ids=5, new_episode=False, window_ms=80_000))
    assert (metrics.dedup_window_cuts, metrics.dedup_ids_cut) == (1, 7)
    (line,) = caplog.messages
    assert "partition 3" in line and "82 s" in line and "RANKFLOW_DEDUP_MAX_IDS=4" in line
    assert b'"dedup_ids_cut":7' in metrics.snapshot()



def test_the_default_cap_holds_ten_minutes_at_100k_events_a_second_over_8_partitions():
    assert Settings(_env_file=None).dedup_max_ids >= 100_000 * 600 // 8


def test_the_api_renders_the_cut_counters_of_every_worker_snapshot():
    from prometheus_client import CollectorRegistry, generate_latest

    from streams.api.app import WorkerCollector

    metrics = WorkerMetrics(worker="w1", dedup_window_cuts=2, dedup_ids_cut=9)
    older = orjson.loads(WorkerMetrics(worker="w0").snapshot())
    del older["dedup_window_cuts"], older["dedup_ids_cut"]  # a worker of before this change
    collector = WorkerCollector()
    collector.snapshots = [older, orjson.loads(metrics.snapshot())]
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'rankflow_worker_dedup_window_cuts_total{worker="w1"} 2.0' in text
    assert 'rankflow_worker_dedup_ids_cut_total{worker="w1"} 9.0' in text
    assert 'rankflow_worker_dedup_ids_cut_total{worker="w0"} 0.0' in text
