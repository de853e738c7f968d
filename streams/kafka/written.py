"""This worker's own changelog records, counted as read by faust's recovery.

faust's in-memory store keeps no offsets, and its recovery counts as read only what it
has read: at every rebalance a worker read again, for the partitions it kept, every
changelog record it had written itself since it last read them (the million-account
join re-read 1.3 million of them: docs/performance.md). A record this worker built
from the state its table holds needs no reading. So once the broker acks it, it counts
as read when:

* its partition is still owned as when the record was built: the same partition
  runtime (a rebalance forgets every runtime and restores them anew; a record built
  before it may be of state the table has since dropped and read back);
* recovery has the changelog partition as active, with a read offset;
* it follows the offset read with nothing between: a record of another writer (a
  stalled worker's late send) is never skipped, and is read at the next rebalance, as
  before (the owner epochs decide then: streams/kafka/app.py).

A send retried after a lost ack leaves a gap (its first copy's offset is unknown):
reading resumes there at the next rebalance. Held by tests/test_written.py, and by
the crash trials, tests/integration/test_fencing.py and test_concurrent_start.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faust.types import TP


class OwnRecordsRead:
    """Moves recovery's read offsets over this worker's own acked changelog records."""

    def __init__(self, recovery: Callable[[], Any], tenure: Callable[[int], object]) -> None:
        #: faust's Recovery service (`app.tables.recovery`, once the app has one): its
        #: `active_tps` and `active_offsets` (the last offset read per partition)
        self.recovery = recovery
        #: what owns a partition now (its runtime, or None): compared by identity
        self.tenure = tenure
        self.counted = 0

    def acked(self, sent: Iterable[tuple[str, int, int]],
              tenures: Mapping[int, object]) -> None:
        """`sent`: (topic, partition, offset) of acked records; `tenures`: the owner of
        each partition when they were built."""
        offsets: dict[TP, list[int]] = {}
        for topic, partition, offset in sent:
            offsets.setdefault(TP(topic, partition), []).append(offset)
        recovery = self.recovery()
        active, read_offsets = recovery.active_tps, recovery.active_offsets
        for tp, found in offsets.items():
            owner = tenures.get(tp.partition)
            if owner is None or self.tenure(tp.partition) is not owner or tp not in active:
                continue
            read = read_offsets.get(tp)
            if read is None:
                continue
            start = read
            for offset in sorted(found):
                if offset == read + 1:
                    read = offset
                elif offset > read:
                    break  # another writer's record lies between: it is read later
            read_offsets[tp] = read
            self.counted += read - start
