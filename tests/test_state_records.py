"""Every changelog record stays under the broker's record limit, whatever valid input
arrives: the longest ids, thousands of campaigns, a batch far ahead of the clock
(streams/core/state.py)."""

from __future__ import annotations

import random

import orjson

from streams.core.dedup import SEGMENT_IDS, RecentEventIds, source_ref
from streams.core.state import (
    NO_STAMP,
    RECORD_LIMIT,
    AccountProfile,
    AccountRecord,
    AccountState,
    PartitionProgress,
    PartsAhead,
    StatePart,
    accounts_of,
    decode_record,
    encode_segment,
    is_part_key,
)
from streams.core.windows import VIEWS, Windows, bucket_floors

NOW = 1_767_225_600_000  # 2026-01-01
MINUTE = 60_000
WINDOWS = Windows()


def longest_id(rng: random.Random) -> str:
    """64 characters that each take 6 bytes in JSON (a control character, escaped)."""
    return "".join(chr(rng.randrange(32)) for _ in range(64))


def test_a_segment_of_the_longest_ids_and_origins_fits_in_one_record():
    rng = random.Random(1)
    recent = RecentEventIds()
    origin = "t" * 249 + ":2147483647:9223372036854775"  # the longest topic name Kafka takes
    for i in range(3 * SEGMENT_IDS):
        recent.add(longest_id(rng), source_ref(5, 2**40 + i), origin + str(i % 10))
    sealed = recent.seal(0, NOW)
    assert len(sealed) == 3
    progress = PartitionProgress(7, [2**62] * 6, 2**62, 2**62, 2**62, 2**62)
    sizes = [len(encode_segment(7, s.segment, s.ids, progress)) for s in sealed]
    assert max(sizes) < RECORD_LIMIT
    assert min(sizes) > RECORD_LIMIT // 2  # the bound is near: the worst case was built


def campaign_name(i: int) -> str:
    return f"{i:06d}".ljust(64, "c")


def busy_account(campaigns: int) -> AccountState:
    state = AccountState("a" * 64, 3, AccountProfile("\x01" * 128, "g" * 64, 2**62))
    floors = bucket_floors(NOW)
    fixed = WINDOWS.fixed_containing(NOW)
    for i in range(campaigns):
        for ago in (0, 2 * 3_600_000, 3 * 86_400_000):
            state.add("view", 1_000_000, NOW - ago, fixed, campaign_name(i), floors)
    state.applied[0] = 2**62
    return state


def test_an_account_in_12000_campaigns_is_written_in_parts_and_read_back_whole():
    state = busy_account(12_000)
    assert len(state.encode()) > RECORD_LIMIT  # one record would be refused by the broker
    records = state.records(NOW)
    assert len(records) >= 3
    assert all(len(value) < RECORD_LIMIT for _, value in records)
    *parts, (head_key, _) = records
    assert head_key == state.account_id and all(is_part_key(k) for k, _ in parts)
    ahead = PartsAhead()
    read = [(k, decode_record(v)) for k, v in records]
    for key, record in read[:-1]:
        assert isinstance(record, StatePart)
        ahead.hold(key, record)
    head = read[-1][1]
    assert isinstance(head, AccountRecord)
    assert ahead.account(head) == state
    assert not ahead.parts  # freed once assembled
    assert accounts_of(dict(records)) == {state.account_id: state}


def test_a_crash_between_the_parts_and_the_account_leaves_the_older_account_whole():
    state = busy_account(6_000)
    first = state.records(NOW)
    floors, fixed = bucket_floors(NOW), WINDOWS.fixed_containing(NOW)
    state.add("view", 5, NOW, fixed, campaign_name(1), floors)
    second = state.records(NOW)
    assert {k for k, _ in first[:-1]}.isdisjoint(k for k, _ in second[:-1])  # other keys
    # the broker has all of the first write and the second's parts, not its account
    latest = dict(first) | dict(second[:-1])
    (older,) = accounts_of(latest).values()
    assert older.campaigns[campaign_name(1)].sums("all", NOW)[VIEWS] == 3_000_000
    (newer,) = accounts_of(dict(first) | dict(second)).values()
    assert newer.campaigns[campaign_name(1)].sums("all", NOW)[VIEWS] == 3_000_005


def test_counts_a_batch_far_ahead_of_the_clock_grew_are_pruned_before_they_are_written():
    """An event-clock cold start: an account with an event every minute for 30 days, all
    in one batch, keeps every minute bucket until the batch ends."""
    state = AccountState("busy", 0)
    floors = bucket_floors(NOW - 31 * 86_400_000)
    start = NOW - 30 * 86_400_000
    for minute in range(30 * 24 * 60):
        ts = start + minute * MINUTE
        state.add("view", 7, ts, WINDOWS.fixed_containing(ts), "c", floors)
    before = state.counts.window_sums(WINDOWS, NOW)
    assert len(state.encode()) > RECORD_LIMIT
    (record,) = state.records(NOW)
    assert len(record[1]) < RECORD_LIMIT // 10
    assert state.counts.window_sums(WINDOWS, NOW) == before
    assert state.campaigns["c"].window_sums(WINDOWS, NOW) == before


def test_records_of_the_previous_format_are_read():
    state = busy_account(2)
    v4 = orjson.loads(state.encode())
    campaigns = {name: counts for name, (counts, _activity) in v4[7].items()}
    v2 = [2, *v4[1:7], campaigns, v4[8]]
    assert AccountState.decode(orjson.dumps(v2)) == state
    v3 = [3, *v4[1:7], campaigns, *v4[8:]]
    assert AccountState.decode(orjson.dumps(v3)) == state
    # a record before board stamps ends at the epoch: Redis may lack it (NO_STAMP)
    state.board_stamp = (7, 41)
    v4 = orjson.loads(state.encode())
    assert v4[-1] == [7, 41] and AccountState.decode(state.encode()) == state
    assert AccountState.decode(orjson.dumps(v4[:-1])).board_stamp == NO_STAMP
