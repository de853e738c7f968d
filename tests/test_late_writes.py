"""A worker woken from a stall sends the records it had in hand after the new owner's
(tests/integration/test_fencing.py caught them): readers keep the newer state
(streams/core/state.py `is_behind`, `supersedes`), and a restored partition numbers its
dedup segments past any the stalled worker can still send
(streams/core/aggregate.py `SEQ_GAP`)."""

from __future__ import annotations

from array import array

import orjson

from streams.core.aggregate import SEQ_GAP, restore_runtime
from streams.core.dedup import RecentEventIds, Segment, source_ref
from streams.core.state import (
    AccountState,
    PartitionProgress,
    StatePart,
    accounts_of,
    decode_record,
    encode_segment,
    is_behind,
    supersedes,
)
from streams.core.windows import Windows, bucket_floors

NOW = 1_767_225_600_000  # 2026-01-01
WINDOWS = Windows()


def viewed(account_id: str, views: int, offset: int) -> AccountState:
    """An account with `views` views applied up to view offset `offset`."""
    state = AccountState(account_id, 3)
    for _ in range(views):
        state.add("view", 1, NOW, WINDOWS.fixed_containing(NOW), None, bucket_floors(NOW))
    state.applied[0] = offset
    return state


def test_a_record_is_behind_when_no_slot_is_further_and_one_is_short():
    def applied(*slots: int) -> array[int]:
        return array("q", [*slots, -1, -1, -1, -1])

    assert is_behind(applied(5, 3), applied(4, 3))
    assert not is_behind(applied(5, 3), applied(5, 3)), "the same state: either will do"
    assert not is_behind(applied(5, 3), applied(6, 3))
    assert not is_behind(applied(5, 3), applied(4, 4)), "further in one slot: not older"


def test_a_late_record_built_before_the_newest_one_does_not_replace_it():
    (_, new), = viewed("acct", 5, offset=40).records(NOW)
    (_, late), = viewed("acct", 3, offset=20).records(NOW)
    assert not supersedes(new, late)
    assert supersedes(late, new)
    (_, again), = viewed("acct", 5, offset=40).records(NOW)
    assert supersedes(new, again), "a rewrite of the same state replaces it"


def test_part_records_carry_the_applied_offsets_of_their_account():
    state = viewed("busy", 1, offset=7)
    for i in range(9_000):
        state.add("view", 1, NOW, WINDOWS.fixed_containing(NOW), f"c{i:05d}".ljust(64, "x"),
                  bucket_floors(NOW))
    records = state.records(NOW)
    parts = [decode_record(value) for _, value in records[:-1]]
    assert parts and all(isinstance(p, StatePart) and p.applied == state.applied
                         for p in parts)
    older = orjson.dumps(["part", 3, "busy", 1, {}])  # written before parts carried it
    part = decode_record(older)
    assert isinstance(part, StatePart) and part.applied is None
    assert supersedes(records[0][1], older), "an older-format part is never held back"


def test_rebuild_keeps_the_newer_state_of_an_account_sent_late():
    """What `rankflow rebuild` reads: the newest value per key by `supersedes`."""
    (key, new), = viewed("acct", 5, offset=40).records(NOW)
    (_, late), = viewed("acct", 3, offset=20).records(NOW)
    latest: dict[str, bytes] = {}
    for value in (new, late):
        if key not in latest or supersedes(latest[key], value):
            latest[key] = value
    assert accounts_of(latest)["acct"].counts == viewed("acct", 5, 40).counts


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


def test_a_late_series_chunk_does_not_replace_the_newer_one():
    """Chunks carry their applied offsets like accounts: a late one behind the chunk
    read before it is not kept by `rankflow rebuild`; a segment always replaces."""
    from streams.core.series import ChunkRecord, chunk_supersedes, encode_chunk

    def chunk(views: int, offset: int) -> bytes:
        return encode_chunk(ChunkRecord(3, "spring", 0, 29_500_000, {29_500_000: [views, 0, 0]},
                                        [offset, -1, -1, -1, -1, -1]))

    assert not chunk_supersedes(chunk(9, 40), chunk(5, 20))
    assert chunk_supersedes(chunk(5, 20), chunk(9, 40))
    assert chunk_supersedes(chunk(9, 40), chunk(9, 40))
    # a chunk's offsets are those of the batches it grew in: the stalled worker's last
    # batch read likes up to 300, the owner's last batch for this chunk only up to 250
    # (test_fencing.py caught the late chunk winning so, its views lost)
    owner = ChunkRecord(3, "spring", 0, 600, {600: [9, 1, 0]}, [900, 250, -1, -1, -1, -1])
    late = ChunkRecord(3, "spring", 0, 600, {600: [5, 1, 0]}, [500, 300, -1, -1, -1, -1])
    assert not chunk_supersedes(encode_chunk(owner), encode_chunk(late))
    grown = ChunkRecord(3, "spring", 0, 600, {600: [9, 1, 0], 601: [1, 0, 0]},
                        [901, 250, -1, -1, -1, -1])
    assert chunk_supersedes(encode_chunk(owner), encode_chunk(grown))
    segment = encode_segment(3, Segment.of(0, NOW, [], 0), [], PartitionProgress(3))
    assert chunk_supersedes(segment, segment)
