"""Changelog records read in bulk while faust's recovery reads their partition.

faust reads a changelog one record at a time: a Message, the conductor, a queue, its
recovery loop, a buffer (about 70 µs of CPU a record: a failover's reading of 50,000
accounts' changelogs took 11 s, docs/performance.md). While recovery reads a changelog
partition, the consumer instead applies a fetch's records to their table in one call,
and hands only the last to faust's way, whose arrival lets recovery see that it has read
to the highwater and end. In faust's own order of things:

1. recovery first takes and handles every record handed to it before (a record taken
   off the queue but not yet handled would be passed over as read), and its buffers
   are applied: the table gets every record in offset order;
2. records at or below recovery's read offset are passed over, as recovery does;
3. the rest but the last are applied to the table (`apply_changelog_batch`, as a full
   buffer is) and recovery's read offset moves to the last of them;
4. the last goes faust's way.

Only while recovery reads the partition as active in the consumer generation that
fetched the records, with the flow running; otherwise every record goes faust's way.
Held by tests/test_bulk_read.py, and by the crash trials, tests/integration/
test_concurrent_start.py and test_fencing.py, which restore partitions through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from faust.serializers import codecs
from faust.types import TP

#: seconds between two looks at whether recovery has handled what it was handed
SETTLE_POLL = 0.001


class ChangelogEvent(NamedTuple):
    """What a table's `apply_changelog_batch` reads of faust's Event: the decoded key
    and value, and the record (its raw value, partition and offset) as `message`."""

    key: Any
    value: Any
    message: Any


class BulkChangelogReader:
    """Applies fetched changelog records to their tables in one call per fetch."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.applied = 0

    async def take(self, tp: TP, records: Sequence[Any], generation: int,
                   flowing: Any) -> Sequence[Any]:
        """Apply what can be applied at once; return the records for faust's way.

        `flowing()`: does the consumer's flow still run?"""
        recovery = self.app.tables.recovery
        if len(records) < 2 or not self._reading(recovery, tp, generation, flowing):
            return records
        queue = self.app.tables.changelog_queue
        while not queue.settled():  # 1. recovery handles what was handed before
            await asyncio.sleep(SETTLE_POLL)
            if not self._reading(recovery, tp, generation, flowing):
                return records
        recovery.flush_buffers()
        seen = recovery.active_offsets.get(tp)
        head = [r for r in records[:-1] if seen is None or r.offset > seen]  # 2.
        if head:  # 3.
            table = recovery.tp_to_table[tp]
            topic = table.changelog_topic
            key_codec, value_codec = topic.key_serializer, topic.value_serializer
            table.apply_changelog_batch([
                ChangelogEvent(codecs.loads(key_codec, r.key),
                               None if r.value is None else codecs.loads(value_codec, r.value),
                               r)
                for r in head])
            recovery.active_offsets[tp] = head[-1].offset
            self.applied += len(head)
        return records[-1:]  # 4.

    def _reading(self, recovery: Any, tp: TP, generation: int, flowing: Any) -> bool:
        return (flowing() and self.app.consumer_generation_id == generation
                and recovery.in_recovery and tp in recovery.active_tps
                and tp in recovery.tp_to_table)
