"""Whole fetch results of the batch topics, as aiokafka's own record objects.

aiokafka's `getmany` wraps every record in a ConsumerRecord (eleven fields, four
Python frames per record), which costs more than reading the record batch itself
(figures in docs/performance.md). The batch handler reads five attributes (offset,
timestamp, key, value, headers) that aiokafka's records already have. So, for the batch
topics, the consumer thread takes each partition's fetch result whole, and leaves
everything else (changelog records, fetch errors, a result already partly read,
transactional reads) to aiokafka's `Fetcher.fetched_records` (`fetched_round`).

This reads aiokafka internals, as faust's own consumer thread does (aiokafka is pinned
to 0.14.x): `Fetcher._records` (a partition's buffered `FetchResult` or error),
`FetchResult._partition_records` and `PartitionRecords`. `take_fetched` does what
`FetchResult.getall` does for a whole result, and tests/test_fetched.py holds the two
to the same records and positions on real record batches.
"""

from __future__ import annotations

from collections.abc import Collection
from inspect import GEN_CREATED, getgeneratorstate
from typing import Any

from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult
from aiokafka.errors import CorruptRecordException
from faust.types import TP


async def fetched_round(fetcher: Any, partitions: Collection[TP] | None,
                        topics: Collection[str],
                        max_records: int | None = None) -> dict[TP, list[Any]]:
    """What `fetcher.fetched_records(partitions, timeout=0)` returns, with the results of
    `topics` taken whole (`take_fetched`).

    aiokafka's own call still drains every other partition (changelogs, and results
    `take_fetched` leaves, such as fetch errors, which it raises), with its own
    `max_records`: the batch topics never starve table recovery
    (tests/test_fetched.py::test_a_full_take_does_not_starve_the_changelogs).
    """
    taken, left = take_fetched(fetcher, partitions or (), topics, max_records)
    others = {tp for tp in (fetcher._records  # noqa: SLF001 (ledger: Fetcher._records)
                            if partitions is None else partitions)
              if tp.topic not in topics} | left
    rest = await fetcher.fetched_records(others, timeout=0, max_records=max_records) \
        if others else {}
    return {**rest, **taken}


def take_fetched(fetcher: Any, partitions: Collection[TP], topics: Collection[str],
                 max_records: int | None = None) -> tuple[dict[TP, list[Any]], set[TP]]:
    """Take the buffered fetch results of `topics` (among `partitions`, when given)
    whole, until `max_records` are taken (the first result is always whole); returns
    them, and the partitions whose results are left for `fetched_records`.

    A result is given only as `getall` would give it: its partition still assigned,
    not paused, and not sought since the fetch; else it is dropped, as
    `fetched_records` drops it. Either way the partition is fetched again right away.
    """
    taken: dict[TP, list[Any]] = {}
    left: set[TP] = set()
    count = 0
    buffered = fetcher._records  # noqa: SLF001 (ledger: Fetcher._records)
    for tp in list(buffered):
        if tp.topic not in topics or (partitions and tp not in partitions):
            continue
        if max_records is not None and count >= max_records:
            break
        result = buffered[tp]
        if type(result) is not FetchResult:  # a fetch error: fetched_records raises it
            left.add(tp)
            continue
        records = result._partition_records  # noqa: SLF001 (ledger: FetchResult._partition_records)
        if records is not None and not _unread(records):
            left.add(tp)
            continue
        if records is not None and result.check_assignment(tp):
            unpacked = _unpacked(tp, records)
            result._update_position()  # noqa: SLF001 (ledger: FetchResult._update_position)
            if unpacked:
                taken[tp] = unpacked
                count += len(unpacked)
        result._partition_records = None  # noqa: SLF001 (ledger: FetchResult._partition_records)
        del buffered[tp]
        fetcher._notify(  # noqa: SLF001 (ledger: Fetcher._notify)
            fetcher._wait_consume_future)  # noqa: SLF001 (ledger: Fetcher._wait_consume_future)
    return taken, left


def _unread(records: Any) -> bool:
    """A `PartitionRecords` that `_unpacked` reads as `getall` would: not begun, and
    not a transactional read (aborted transactions are `getall`'s to skip)."""
    iterator = records._records_iterator  # noqa: SLF001 (ledger: _records_iterator)
    return (records._isolation_level  # noqa: SLF001 (ledger: PartitionRecords._isolation_level)
            == READ_UNCOMMITTED and iterator is not None
            and getgeneratorstate(iterator) == GEN_CREATED)


def _unpacked(tp: TP, records: Any) -> list[Any]:
    """The records of a `PartitionRecords` from its fetch offset on, as its
    `_unpack_records` yields them (control batches skipped), without a ConsumerRecord
    each; advances its `next_fetch_offset` past the last batch."""
    out: list[Any] = []
    batches = records._records  # noqa: SLF001 (ledger: PartitionRecords._records)
    check_crcs = records._check_crcs  # noqa: SLF001 (ledger: PartitionRecords._check_crcs)
    start = records.next_fetch_offset
    while batches.has_next():
        batch = batches.next_batch()
        if check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {tp}")
        if not batch.is_control_batch:
            first = len(out)
            out.extend(batch)
            # a batch (compressed ones, in the old formats) may begin before the offset
            # asked for
            if len(out) > first and out[first].offset < start:
                out[first:] = [record for record in out[first:] if record.offset >= start]
        start = records.next_fetch_offset = batch.next_offset
    return out
