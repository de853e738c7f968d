"""Partition ownership: which partitions this worker applies records for, and their restore.

Responsible for:

* saying whether records of a source partition may be applied (`ready`): only once its
  runtime is restored, or its tables are read to the end so that it can be
  (streams/kafka/recovered.py; tests/test_recovered.py);
* restoring the runtimes of newly owned partitions from the recovered tables, at the
  recovery signal or at their first batch, and then rewriting in Redis what their
  layout may lack there;
* writing again, after a restore, the accounts whose newest changelog record is behind
  their state (a stalled previous owner's late send: `AccountTable.overtaken`), before
  compaction keeps that record alone (tests/integration/test_fencing.py);
* forgetting revoked partitions, parking their runtimes for a rebalance that gives them
  back with their tables unchanged.

The previous owner (or this worker, before a crash) may have written the changelog of
its last batches but not their Redis writes: a replay of those batches changes no state,
so only the rewrite restores their accounts, decay and campaign totals
(tests/integration/test_outages.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from streams.core.aggregate import PartitionRuntime, restore_runtime
from streams.core.dedup import RecentEventIds, Segment
from streams.core.series import ChunkRecord
from streams.core.state import AccountState, PartitionProgress
from streams.core.windows import Windows

log = logging.getLogger(__name__)


class Partitioned(Protocol):
    """A topic partition, as faust's TP names it."""

    @property
    def partition(self) -> int: ...


class PartitionOwnership:
    """The owned partitions' runtimes, restored from the tables once they are read."""

    def __init__(self, runtimes: MutableMapping[int, PartitionRuntime],
                 accounts: Mapping[str, AccountState],
                 segments: Mapping[str, tuple[int, Segment, PartitionProgress | None]
                                   | ChunkRecord],
                 windows: Windows, recent: Callable[[], RecentEventIds],
                 clock: Callable[[], int], recovered: Callable[[int], bool],
                 assigned: Callable[[], set[int]],
                 restore_layout: Callable[[set[int]], object],
                 claim: Callable[[set[int]], object], heal: Callable[[set[int]], object],
                 lock: asyncio.Lock,
                 table_changes: Callable[[int], object] = lambda partition: object()
                 ) -> None:
        self.runtimes = runtimes
        self.accounts = accounts
        self.segments = segments
        self.windows = windows
        self.recent = recent
        self.clock = clock
        self.recovered = recovered
        self.assigned = assigned
        self.restore_layout = restore_layout
        self.claim = claim
        self.heal = heal
        self.lock = lock
        #: the tables' changes of a partition so far (by default a new object each
        #: time: no parked runtime is ever taken back)
        self.table_changes = table_changes
        #: partition -> a revoked runtime and its tables' changes then: it is taken back
        #: if the partition comes back with its tables unchanged (a rebalance that kept
        #: it), not rebuilt from every account again
        self.parked: dict[int, tuple[PartitionRuntime, object]] = {}

    def ready(self, tp: Partitioned) -> bool:
        """May records of this source partition be applied?"""
        return tp.partition in self.runtimes or self.recovered(tp.partition)

    async def on_recovery(self, *_: Any, **__: Any) -> None:
        """Tables read: restore the owned partitions now, not at their first batch, so
        decay and Redis rewrites cover them before any new event arrives. (faust also
        sends this signal for an assignment a newer one has replaced: only partitions
        whose tables are read to the end are restored.)"""
        async with self.lock:
            assigned = self.assigned()
            for p in self.parked.keys() - assigned:
                del self.parked[p]
            found = {p for p in assigned - self.runtimes.keys() if self.recovered(p)}
            if found:
                self.restore(found)

    async def forget(self, app: Any, revoked: Iterable[Partitioned], **_: Any) -> None:
        for tp in revoked:
            runtime = self.runtimes.pop(tp.partition, None)
            if runtime is not None:
                self.parked[tp.partition] = (runtime, self.table_changes(tp.partition))

    def admit(self, batch: Mapping[Any, Sequence[Any]]) -> Mapping[Any, Sequence[Any]]:
        """The batch's records of owned partitions, restoring those it reaches first.

        The consumer delivers no records before `ready`; a rebalance since then may have
        taken a partition away or started reading it again: its records are left for the
        next fetch. Called under the lock.
        """
        missing = {tp.partition for tp in batch} - self.runtimes.keys()
        if not missing:
            return batch
        late = {p for p in missing if not self.recovered(p)}
        if late:
            log.warning("partitions %s: tables no longer read to the end; "
                        "their records are left for the next fetch", sorted(late))
            batch = {tp: recs for tp, recs in batch.items() if tp.partition not in late}
        self.restore(missing - late)
        return batch

    def restore(self, partitions: set[int]) -> None:
        """Claim newly owned partitions, rebuild their runtimes from the recovered
        tables or take back those parked at the revocation whose tables have not changed
        since (a stalled previous owner's late writes are refused from here on), heal
        their overtaken accounts' records, and rewrite in Redis what it may lack of
        their layout (`LayoutRewriter.restored`)."""
        if not partitions:
            return
        self.claim(partitions)
        kept = {p for p in partitions if p in self.parked
                and self.parked[p][1] == self.table_changes(p)}
        for p in kept:
            self.runtimes[p] = self.parked[p][0]
            log.info("partition %d: kept through the rebalance, %d events counted so far",
                     p, self.runtimes[p].progress.events)
        for p in partitions:
            self.parked.pop(p, None)
        rebuilt = partitions - kept
        segments: dict[int, list[tuple[Segment, PartitionProgress | None]]] = {
            p: [] for p in rebuilt}
        chunks: dict[int, list[ChunkRecord]] = {p: [] for p in rebuilt}
        for value in self.segments.values() if rebuilt else ():
            if isinstance(value, ChunkRecord):
                if value.partition in chunks:
                    chunks[value.partition].append(value)
                continue
            partition, segment, progress = value
            if partition in segments:
                segments[partition].append((segment, progress))
        accounts: dict[int, list[AccountState]] = {p: [] for p in rebuilt}
        for state in self.accounts.values() if rebuilt else ():
            if state.partition in accounts:
                accounts[state.partition].append(state)
        clock = self.clock()
        for p in rebuilt:
            self.runtimes[p] = restore_runtime(p, self.recent(), segments[p], accounts[p],
                                               self.windows, clock, chunks[p])
            log.info("partition %d: %d accounts, %d events counted so far",
                     p, len(accounts[p]), self.runtimes[p].progress.events)
        self.heal(partitions)
        if kept or any(accounts[p] or self.runtimes[p].progress.events
                       or self.runtimes[p].progress.dlq for p in rebuilt):
            self.restore_layout(partitions)
