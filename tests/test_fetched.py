"""`take_fetched` gives what aiokafka's `FetchResult.getall` gives, on real record batches."""

from __future__ import annotations

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

from streams.fetched import take_fetched

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
    """The parts of aiokafka's Fetcher that `take_fetched` uses."""

    _records: dict[TP, Any] = field(default_factory=dict)
    _wait_consume_future: object = None
    notified: int = 0

    def _notify(self, future: object) -> None:
        self.notified += 1


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
    own = take_fetched(fetcher, {tp}, {TOPIC})
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
    tps = [TP(TOPIC, p) for p in range(5)] + [TP("app-account-state-changelog", 0)]
    states = {tp: PartitionState(0) for tp in tps}
    assignment = Assignment(states)
    results = {tp: fetched(tp, assignment, 0, [record_batch(0, 3)]) for tp in tps}
    states[tps[1]].paused = True
    states[tps[2]].position = 2  # sought since the fetch
    results[tps[3]] = fetched(tps[3], assignment, 0, [record_batch(0, 3)], READ_COMMITTED)
    next(results[tps[4]]._partition_records)  # partly read by getall already
    fetcher = Fetcher(dict(results))
    taken = take_fetched(fetcher, set(tps), {TOPIC})
    assert list(taken) == [tps[0]]
    assert set(fetcher._records) == set(tps[1:])
    # the paused and the sought ones are left empty, for fetched_records to drop
    assert not results[tps[1]].has_more() and not results[tps[2]].has_more()
    assert results[tps[3]].has_more() and results[tps[4]].has_more()


def test_partitions_not_asked_for_are_left_and_max_records_ends_a_take():
    tps = [TP(TOPIC, p) for p in range(3)]
    assignment = Assignment({tp: PartitionState(0) for tp in tps})
    fetcher = Fetcher({tp: fetched(tp, assignment, 0, [record_batch(0, 4)]) for tp in tps})
    assert list(take_fetched(fetcher, {tps[1], tps[2]}, {TOPIC}, max_records=2)) == [tps[1]]
    assert set(fetcher._records) == {tps[0], tps[2]}
