"""A worker woken from a stall sends the records it had in hand after the new owner's
(tests/integration/test_fencing.py caught them): readers keep the newer owner's record
(streams/core/state.py `supersedes`, series.py `chunk_supersedes`), a restored partition
writes in an epoch at least as new as any it restored, and numbers its dedup segments
past any the stalled worker can still send (streams/core/aggregate.py `SEQ_GAP`)."""

from __future__ import annotations

import orjson

from streams.core.aggregate import SEQ_GAP, restore_runtime
from streams.core.dedup import RecentEventIds, Segment, source_ref
from streams.core.series import ChunkRecord, chunk_supersedes, encode_chunk
from streams.core.state import (
    AccountState,
    PartitionProgress,
    StatePart,
    accounts_of,
    decode_record,
    encode_segment,
    supersedes,
)
from streams.core.windows import Windows, bucket_floors

NOW = 1_767_225_600_000  # 2026-01-01
WINDOWS = Windows()


def viewed(account_id: str, views: int, offset: int, epoch: int) -> AccountState:
    """An account with `views` views applied up to view offset `offset`, written in the
    owner epoch `epoch`."""
    state = AccountState(account_id, 3, epoch=epoch)
    for _ in range(views):
        state.add("view", 1, NOW, WINDOWS.fixed_containing(NOW), None, bucket_floors(NOW))
    state.applied[0] = offset
    return state


def test_a_late_record_of_an_older_owner_does_not_replace_the_newer_one():
    """The stalled owner (epoch 2) built its record before the new owner (epoch 3) took
    over; it arrives after. Within an epoch the newest offset wins, as always: offsets
    alone cannot tell, a late record can be further in one source topic and short in
    another (test_fencing.py caught that order losing views)."""
    (_, new), = viewed("acct", 5, offset=40, epoch=3).records(NOW)
    (_, late), = viewed("acct", 3, offset=50, epoch=2).records(NOW)
    assert not supersedes(new, late)
    assert supersedes(late, new)
    (_, again), = viewed("acct", 6, offset=41, epoch=3).records(NOW)
    assert supersedes(new, again), "the same owner's next record replaces it"
    (_, fewer), = viewed("acct", 4, offset=42, epoch=3).records(NOW)
    assert supersedes(again, fewer), "counts may shrink (an unlike): offsets decide"


def test_part_records_carry_the_epoch_of_their_account():
    state = viewed("busy", 1, offset=7, epoch=5)
    for i in range(9_000):
        state.add("view", 1, NOW, WINDOWS.fixed_containing(NOW), f"c{i:05d}".ljust(64, "x"),
                  bucket_floors(NOW))
    records = state.records(NOW)
    parts = [decode_record(value) for _, value in records[:-1]]
    assert parts and all(isinstance(p, StatePart) and p.epoch == 5 for p in parts)
    older = orjson.dumps(["part", 3, "busy", 1, {}])  # written before parts carried it
    part = decode_record(older)
    assert isinstance(part, StatePart) and part.epoch == 0


def test_rebuild_keeps_the_newer_owners_state_of_an_account_sent_late():
    """What `rankflow rebuild` reads: the newest value per key by `supersedes`."""
    (key, new), = viewed("acct", 5, offset=40, epoch=3).records(NOW)
    (_, late), = viewed("acct", 3, offset=20, epoch=2).records(NOW)
    latest: dict[str, bytes] = {}
    for value in (new, late):
        if key not in latest or supersedes(latest[key], value):
            latest[key] = value
    assert accounts_of(latest)["acct"].counts == viewed("acct", 5, 40, 3).counts


def test_a_restored_partition_numbers_its_segments_past_any_sent_late():
    """The stalled owner had segment 8 in hand when the new owner restored 0..7: the
    new owner's next segment must not take key 8, or the late one replaces its ids."""
    progress = PartitionProgress(3, events=70, seq=8)
    segments = [(Segment.of(seq, NOW, [(f"e{seq}", source_ref(0, seq))], seq + 1),
                 progress if seq == 7 else None) for seq in range(8)]
    runtime = restore_runtime(3, RecentEventIds(), segments, [], WINDOWS, NOW)
    assert runtime.progress.seq == 7 + SEQ_GAP
    assert runtime.progress.events == 70


def test_a_late_segment_of_the_previous_owner_neither_carries_progress_nor_hides_ids():
    """Restored again once the late segment landed: the progress is the new owner's
    (its newest segment), and the late one's ids, seen in the same input, stay known."""
    owner = PartitionProgress(3, events=90, seq=7 + SEQ_GAP + 1)
    late = PartitionProgress(3, events=75, seq=9)
    segments = [
        (Segment.of(7, NOW, [("e7", source_ref(0, 7))], 8), None),
        (Segment.of(8, NOW, [("e8", source_ref(0, 8))], 9), late),
        (Segment.of(7 + SEQ_GAP, NOW, [("e9", source_ref(0, 9))], 9), owner),
    ]
    runtime = restore_runtime(3, RecentEventIds(), segments, [], WINDOWS, NOW)
    assert runtime.progress.events == 90
    assert runtime.progress.seq == 7 + 2 * SEQ_GAP
    assert runtime.recent.first_seen("e8") == source_ref(0, 8)
    assert runtime.recent.first_seen("e9") == source_ref(0, 9)


def test_a_late_series_chunk_of_an_older_owner_does_not_replace_the_newer_one():
    """Chunks carry their owner epoch like accounts (`rankflow rebuild`); a segment
    always replaces."""
    def chunk(likes: int, epoch: int) -> bytes:
        return encode_chunk(ChunkRecord(3, "spring", 0, 600, {600: [9, likes, 0]},
                                        [40, 20, -1, -1, -1, -1], epoch))

    assert not chunk_supersedes(chunk(1, 3), chunk(2, 2))
    assert chunk_supersedes(chunk(2, 2), chunk(1, 3))
    assert chunk_supersedes(chunk(1, 3), chunk(0, 3)), "an unlike in the same epoch"
    segment = encode_segment(3, Segment.of(0, NOW, [], 0), [], PartitionProgress(3))
    assert chunk_supersedes(segment, segment)


def test_a_restored_partition_writes_in_the_newest_epoch_it_restored():
    """A consumer group created anew starts its generations again: the writes of the
    partition's next owner must still not lose to its records (epoch 7)."""
    accounts = [viewed("acct", 1, offset=3, epoch=7)]
    runtime = restore_runtime(3, RecentEventIds(), [], accounts, WINDOWS, NOW)
    assert runtime.epoch_floor == 7
