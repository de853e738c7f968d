"""The campaign series core (streams/core/series.py): activity bitmaps, chunks, their
replay, pruning at the span's edge, and restore from records."""

import random

from streams.core.aggregate import BatchAggregator, restore_runtime
from streams.core.dedup import RecentEventIds
from streams.core.series import (
    ACTIVITY_BITS,
    ChunkRecord,
    SeriesBook,
    active_buckets,
    decode_partition_record,
    encode_chunk,
    first_kept,
    mark_active,
    new_activity,
)
from streams.core.state import SLOT_VIEW, AccountState, decode_record
from streams.core.windows import HOUR_MS, MINUTE_MS, VIEWS
from tests.helpers import NOW, TOPICS, Core, Log

MINUTE = NOW // MINUTE_MS


def test_an_activity_bit_flips_once_and_shifts_with_the_newest_minute():
    activity = new_activity()
    assert mark_active(activity, 0, MINUTE)
    assert not mark_active(activity, 0, MINUTE)
    assert mark_active(activity, 0, MINUTE - 5)
    assert mark_active(activity, 0, MINUTE + 3)
    assert sorted(active_buckets(activity, 0)) == [MINUTE - 5, MINUTE, MINUTE + 3]
    # older than the bits reach: not kept, and not counted
    assert not mark_active(activity, 0, MINUTE + 3 - ACTIVITY_BITS[0])
    # a jump past the width leaves only the new bit
    assert mark_active(activity, 0, MINUTE + 10_000)
    assert list(active_buckets(activity, 0)) == [MINUTE + 10_000]


def test_activity_is_kept_in_the_account_record_as_hex():
    state = AccountState("a", 0)
    state.activity["c1"] = activity = new_activity()
    for minute in (MINUTE, MINUTE - 1439):
        mark_active(activity, 0, minute)
        mark_active(activity, 1, minute // 60)
    state.add("view", 1, NOW, (0,), "c1", (0, 0, 0))
    decoded = AccountState.decode(state.encode())
    assert decoded.activity == {"c1": activity}
    assert activity[1] > 2 ** 64  # beyond what orjson writes as an int


def book_at(clock=NOW):
    book = SeriesBook(3)
    book.begin(clock)
    return book


def test_chunks_hold_minutes_of_an_hour_and_hours_of_a_day():
    book = book_at()
    book.saw(SLOT_VIEW, 7)
    book.add("c1", VIEWS, 5, MINUTE, MINUTE // 60)
    book.account_active("c1", 0, MINUTE)
    changes = book.finish()
    (key_m, chunk_m), (key_h, chunk_h) = sorted(changes.records, key=lambda r: r[1].step)
    assert key_m == f"3:series:c1:1m:{MINUTE - MINUTE % 60}"
    assert chunk_m.cells == {MINUTE: [5, 0, 0]} and chunk_m.applied[SLOT_VIEW] == 7
    assert key_h == f"3:series:c1:1h:{MINUTE // 60 - MINUTE // 60 % 24}"
    assert (chunk_m.campaign, chunk_m.step) == ("c1", 0) and chunk_h.step == 1
    assert ("c1", "1m", MINUTE * MINUTE_MS, "5,0,0,1") in changes.cells
    assert ("c1", "1h", MINUTE // 60 * HOUR_MS, "5,0,0,0") in changes.cells
    assert book.high[SLOT_VIEW] == 7
    for record in (chunk_m, chunk_h):
        assert decode_partition_record(encode_chunk(record)) == record


def test_a_replayed_event_is_added_only_to_the_chunks_without_it():
    minute_chunk = ChunkRecord(3, "c1", 0, MINUTE - MINUTE % 60, {MINUTE: [5, 0, 0]},
                               [9, -1, -1, -1, -1, -1])
    book = SeriesBook.restore(3, [minute_chunk], [], NOW)
    book.begin(NOW)
    book.saw(SLOT_VIEW, 10)
    book.add_replayed("c1", VIEWS, 5, NOW, SLOT_VIEW, 9)   # the minute chunk has it
    book.add_replayed("c1", VIEWS, 2, NOW, SLOT_VIEW, 10)  # neither has it
    book.finish()
    cells = {(c[1], c[2]): c[3] for c in book.all_cells()}
    assert cells[("1m", MINUTE * MINUTE_MS)] == "7,0,0,0"
    assert cells[("1h", MINUTE // 60 * HOUR_MS)] == "7,0,0,0"


def test_a_chunk_leaves_once_its_last_bucket_leaves_the_span():
    book = book_at()
    book.saw(SLOT_VIEW, 1)
    oldest = first_kept(NOW)[0]
    book.add("c1", VIEWS, 1, oldest, oldest // 60)
    book.add("c1", VIEWS, 1, oldest - 1, (oldest - 1) // 60)  # out of the span: not kept
    changes = book.finish()
    assert ("c1", "1m", (oldest - 1) * MINUTE_MS) not in {c[:3] for c in changes.cells}
    start = oldest - oldest % 60
    last_in = (start + 60 + 1440 - 1) * MINUTE_MS  # the clock at which its last minute
    book.begin(last_in - MINUTE_MS)                 # is still the oldest in the span
    assert book.finish().records == []
    book.begin(last_in)
    gone = book.finish()
    assert gone.records == [(f"3:series:c1:1m:{start}", None)]
    assert gone.cells == [("c1", "1m", oldest * MINUTE_MS, None)]


def events(seed=5, n=400):
    rng = random.Random(seed)
    log = Log(partitions=1)
    for i in range(n):
        kind = rng.choice(["view", "view", "like", "upload", "follow"])
        ts = NOW - rng.choice([0, 1, 2, 90, 300, 1439, 1500, 20_000, 50_000]) * MINUTE_MS
        log.event(f"acct{rng.randrange(12)}", kind, event_id=f"e{i}", ts=ts,
                  count=1 if kind == "upload" else rng.randint(1, 9),
                  campaign=rng.choice(["c1", "c2", None]))
    return log


def brute_force(log):
    """campaign, step, bucket ms -> views,likes,uploads,accounts, in the span of NOW."""
    import orjson
    sums: dict = {}
    first = first_kept(NOW)
    for (topic, _), records in log.records.items():
        for record in records:
            event = orjson.loads(record.value)
            if event.get("campaign") is None:
                continue
            for step, unit in (("1m", MINUTE_MS), ("1h", HOUR_MS)):
                bucket = event["ts"] // unit
                if bucket < first[step == "1h"]:
                    continue
                cell = sums.setdefault((event["campaign"], step, bucket * unit),
                                       [0, 0, 0, set()])
                slot = {TOPICS.event("view"): 0, TOPICS.event("like"): 1,
                        TOPICS.event("upload"): 2}.get(topic)
                if slot is not None:
                    cell[slot] += event["count"]
                cell[3].add(event["account_id"])
    return {k: f"{v},{lk},{u},{len(a)}" for k, (v, lk, u, a) in sums.items()}


def cells_of(runtime):
    return {c[:3]: c[3] for c in runtime.series.all_cells()}


def test_the_series_match_a_brute_force_count():
    log = events()
    core = Core(partitions=1)
    core.feed(log)
    assert cells_of(core.runtimes[0]) == brute_force(log)


def split_feed(log, core, cut):
    """Feed the log in two batches, the first up to `cut` records of each topic; the
    state records written by each batch."""
    batches = []
    for upto in (cut, None):
        batch = {tp: records[core.read.get(tp, 0):upto] for tp, records in log.records.items()}
        for tp, records in batch.items():
            core.read[tp] = core.read.get(tp, 0) + len(records)
        result = core.aggregator.process({tp: r for tp, r in batch.items() if r}, NOW)
        accounts = {a: s.encode() for a, s in result.accounts.items()}
        chunks = dict(result.series[0].records) if 0 in result.series else {}
        batches.append((accounts, chunks, {tp: len(r) for tp, r in batch.items()}))
    return batches


def test_a_replay_after_any_lost_record_converges():
    """A crash after the first batch's records and some of the second's: the accounts
    only, the chunks only, or none; the second batch replayed then gives the same."""
    log = events(seed=9)
    whole = Core(partitions=1)
    whole.feed(log)
    want = cells_of(whole.runtimes[0])
    for kept in ("accounts", "chunks", "neither", "both"):
        core = Core(partitions=1)
        (accounts1, chunks1, sizes1), (accounts2, chunks2, _) = split_feed(log, core, 150)
        accounts = dict(accounts1)
        chunks = dict(chunks1)
        if kept in ("accounts", "both"):
            accounts.update(accounts2)
        if kept in ("chunks", "both"):
            chunks.update(chunks2)
        states = {a: decode_record(v).state for a, v in accounts.items()}
        runtime = restore_runtime(0, RecentEventIds(), [], states.values(), core.windows,
                                  NOW, [c for c in chunks.values() if c is not None])
        aggregator = BatchAggregator(TOPICS, core.windows, 1, states, {0: runtime})
        aggregator.process({tp: log.records[tp][sizes1[tp]:] for tp in log.records}, NOW)
        assert cells_of(runtime) == want, kept
