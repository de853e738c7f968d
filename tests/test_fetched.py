"""`take_fetched` gives what aiokafka's `FetchResult.getall` gives, on real record batches."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

from aiokafka.consumer.fetcher import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    FetchResult,
    PartitionRecords,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from faust.types import TP

from streams.kafka.fetched import fetched_round, take_fetched

TOPIC = "events.view"
#: where a v2 record batch keeps its CRC and its attributes (the CRC covers the rest)
CRC_AT, ATTRIBUTES_AT = 17, 21
CONTROL_BIT = 0x20


def record_batch(first: int, n: int, control: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for offset in range(first, first + n):
        builder.append(offset - first, timestamp=1_700_000_000_000 + offset,
                       key=b"acct-%d" % offset, value=b'{"n":%d}' % offset,
                       headers=[("h", b"%d" % offset)] if offset % 2 else [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, first)  # base offset
    if control:
        attributes = struct.unpack_from(">h", data, ATTRIBUTES_AT)[0] | CONTROL_BIT
        struct.pack_into(">h", data, ATTRIBUTES_AT, attributes)
        struct.pack_into(">I", data, CRC_AT, calc_crc32c(bytes(data[ATTRIBUTES_AT:])))
    return bytes(data)


@dataclass
class PartitionState:
    position: int
    paused: bool = False

    def consumed_to(self, position: int) -> None:
        self.position = position


@dataclass
class Assignment:
    states: dict[TP, PartitionState]
    active: bool = True

    def state_value(self, tp: TP) -> PartitionState:
        return self.states[tp]


@dataclass
class Fetcher:
    """The parts of aiokafka's Fetcher that `take_fetched` uses; `fetched_records` as
    aiokafka's with no wait: every result of the partitions asked for, via getall."""

    _records: dict[TP, Any] = field(default_factory=dict)
    _wait_consume_future: object = None
    notified: int = 0
    asked: list[set[TP]] = field(default_factory=list)

    def _notify(self, future: object) -> None:
        self.notified += 1

    async def fetched_records(self, partitions: set[TP], timeout: float = 0,
                              max_records: int | None = None) -> dict[TP, list[Any]]:
        self.asked.append(set(partitions))
        drained = {}
        for tp in [tp for tp in self._records if tp in partitions]:
            drained[tp] = self._records.pop(tp).getall(max_records)
        return drained


def fetched(tp: TP, assignment: Assignment, fetch_offset: int, batches: list[bytes],
            isolation: int = READ_UNCOMMITTED) -> FetchResult:
    records = PartitionRecords(tp, MemoryRecords(b"".join(batches)), [], fetch_offset,
                               None, None, True, isolation)
    return FetchResult(tp, assignment=assignment, partition_records=records, backoff=0)


def seen(records: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in records]


def both_ways(batches: list[bytes], fetch_offset: int) -> tuple[Any, ...]:
    tp = TP(TOPIC, 0)
    stock_state, own_state = PartitionState(fetch_offset), PartitionState(fetch_offset)
    stock = fetched(tp, Assignment({tp: stock_state}), fetch_offset, batches).getall()
    fetcher = Fetcher({tp: fetched(tp, Assignment({tp: own_state}), fetch_offset, batches)})
    own, left = take_fetched(fetcher, {tp}, {TOPIC})
    assert left == set()
    return stock, stock_state, own.get(tp, []), own_state, fetcher


def test_the_same_records_and_position_as_getall():
    batches = [record_batch(0, 5), record_batch(5, 1, control=True), record_batch(6, 4)]
    for fetch_offset in (0, 2, 6):
        stock, stock_state, own, own_state, fetcher = both_ways(batches, fetch_offset)
        assert seen(own) == seen(stock)
        assert [r.offset for r in own] == [o for o in range(fetch_offset, 10) if o != 5]
        assert own_state.position == stock_state.position == 10
        assert fetcher._records == {} and fetcher.notified == 1


def test_a_control_batch_alone_moves_the_position_and_gives_nothing():
    stock, stock_state, own, own_state, fetcher = both_ways([record_batch(7, 1, True)], 7)
    assert stock == own == []
    assert own_state.position == stock_state.position == 8
    assert fetcher._records == {}


def test_results_getall_would_not_give_whole_are_left_to_aiokafka():
    """Paused, or sought since the fetch: dropped, as aiokafka drops them. Transactional
    reads and results partly read already: left to aiokafka."""
    tps = [TP(TOPIC, p) for p in range(5)] + [TP("app-account-state-changelog", 0)]
    states = {tp: PartitionState(0) for tp in tps}
    assignment = Assignment(states)
    results = {tp: fetched(tp, assignment, 0, [record_batch(0, 3)]) for tp in tps}
    states[tps[1]].paused = True
    states[tps[2]].position = 2  # sought since the fetch
    results[tps[3]] = fetched(tps[3], assignment, 0, [record_batch(0, 3)], READ_COMMITTED)
    results[tps[4]].getall(1)  # partly read by getall already
    fetcher = Fetcher(dict(results))
    taken, left = take_fetched(fetcher, set(tps), {TOPIC})
    assert list(taken) == [tps[0]]
    assert left == {tps[3], tps[4]}
    assert set(fetcher._records) == {tps[3], tps[4], tps[5]}
    assert fetcher.notified == 3  # each partition taken or dropped is fetched again


def test_partitions_not_asked_for_are_left_and_max_records_ends_a_take():
    tps = [TP(TOPIC, p) for p in range(3)]
    assignment = Assignment({tp: PartitionState(0) for tp in tps})
    fetcher = Fetcher({tp: fetched(tp, assignment, 0, [record_batch(0, 4)]) for tp in tps})
    taken, _ = take_fetched(fetcher, {tps[1], tps[2]}, {TOPIC}, max_records=2)
    assert list(taken) == [tps[1]]
    assert set(fetcher._records) == {tps[0], tps[2]}


def test_a_full_take_does_not_starve_the_changelogs():
    """The scaling run hung once: batch topics filled every take's `max_records`, so
    aiokafka's call that drains the changelogs never ran, and recovery never ended."""
    sources = [TP(TOPIC, p) for p in range(3)]
    changelog = TP("app-account-state-changelog", 0)
    assignment = Assignment({tp: PartitionState(0) for tp in [*sources, changelog]})
    fetcher = Fetcher({tp: fetched(tp, assignment, 0, [record_batch(0, 4)])
                       for tp in [*sources, changelog]})
    partly_read = sources[0]
    fetcher._records[partly_read].getall(1)
    records = asyncio.run(fetched_round(fetcher, {*sources, changelog}, {TOPIC},
                                        max_records=4))
    assert set(records) == {partly_read, sources[1], changelog}
    assert fetcher.asked == [{changelog, partly_read}]
    assert [r.offset for r in records[changelog]] == [0, 1, 2, 3]
    assert [r.offset for r in records[partly_read]] == [1, 2, 3]
    assert set(fetcher._records) == {sources[2]}  # for the next round
