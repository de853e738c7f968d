"""The batch step: one fetched batch applied in memory, and its writes queued in order.

The consumer (streams/kafka/transport.py) calls it with each batch, fetches and applies
the next one while this one's writes are in flight, and marks a batch's offsets
committable only once its writes are done. A crash anywhere replays the batch; the
watermarks in state make the replay send, count and apply nothing twice, and the
replayed accounts are rewritten in Redis (tests/integration/test_crash_trials.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from streams.core.aggregate import BatchResult
from streams.core.state import AccountState
from streams.core.updates import BoardUpdate, BoardUpdates
from streams.worker.changelog import OutboundRecord, outbound_records
from streams.worker.metrics import SAMPLE_EVERY, MetricsReporter, WorkerMetrics
from streams.worker.order import WriteOrder

RecordBatch = Mapping[Any, Sequence[Any]]


class Admission(Protocol):
    """PartitionOwnership: owned partitions' records, restoring those first reached."""

    def admit(self, batch: RecordBatch) -> RecordBatch: ...


class Aggregator(Protocol):
    """BatchAggregator: validates, dedups, re-keys and applies records to state."""

    def process(self, records: RecordBatch, clock_ms: int) -> BatchResult: ...


class Decay(Protocol):
    """DecayTimer: the accounts whose buckets left a window by the clock."""

    def due(self, clock: int) -> dict[str, AccountState]: ...


class Fence(Protocol):
    """PartitionFence: may a write stamped with these fences still be sent?"""

    def current(self, fences: Mapping[int, tuple[int, int]]) -> bool: ...


class Changelog(Protocol):
    """ChangelogWriter: encodes state records, and sends records until acked."""

    def records(self, result: BatchResult, clock_ms: int, now_ms: int,
                fences: Mapping[int, tuple[int, int]]) -> list[OutboundRecord]: ...

    def tenure(self, partitions: Iterable[int]) -> dict[int, object]: ...

    async def persist(self, outbound: list[OutboundRecord], changelog: list[OutboundRecord],
                      tenure: Mapping[int, object] | None = None) -> None: ...


class BatchStep:
    """Applies a batch to the owned partitions' state and queues its writes."""

    def __init__(self, ownership: Admission, aggregator: Aggregator, decay: Decay,
                 changelog: Changelog, updates: BoardUpdates,
                 write_redis: Callable[[BoardUpdate], Awaitable[None]], order: WriteOrder,
                 reporter: MetricsReporter, clock: Callable[[], int],
                 lock: asyncio.Lock, fence: Fence) -> None:
        self.ownership = ownership
        self.aggregator = aggregator
        self.decay = decay
        self.changelog = changelog
        self.updates = updates
        self.write_redis = write_redis
        self.order = order
        self.reporter = reporter
        self.metrics: WorkerMetrics = reporter.metrics
        self.clock = clock
        self.lock = lock
        self.fence = fence

    async def __call__(self, batch: RecordBatch) -> asyncio.Future[None]:
        """Apply a batch now; returns its writes, which run after the previous batch's.

        1. admit the records of owned partitions, restoring the partitions this batch
           is the first to reach;
        2. aggregate the records (pure, in memory): counts, dead letters, re-keyed
           copies, each changed account once;
        3. take the accounts whose buckets left a window by the clock (decay);
        4. score the changed and decayed accounts into one board update, stamped;
        5. encode the changed state as changelog records, each with the stamp of the
           update that carries it to Redis, noting the partitions' owners (their acked
           records then count as read: streams/kafka/written.py);
        6. count the batch in the metrics;
        7. queue the writes after every write before them: Redis alongside the dead
           letters, re-keyed copies and changelog (`_write`).
        """
        async with self.lock:
            batch = self.ownership.admit(batch)
            result = self.aggregator.process(batch, self.clock())
            clock = self.clock()
            now_ms = int(time.time() * 1000)
            decayed = self.decay.due(clock)
            states = {**decayed, **result.accounts}
            partitions = result.partitions | {s.partition for s in decayed.values()}
            update = self.updates.of(states.values(), result.profiles, partitions, clock,
                                     now_ms, {p: c.cells for p, c in result.series.items()})
            changelog = self.changelog.records(result, clock, now_ms, update.fences)
            self.reporter.count(batch, result.counted, result.dead_lettered)
            sampled = [r.timestamp for records in batch.values()
                       for r in records[::SAMPLE_EVERY]]
            tenure = self.changelog.tenure({r.partition for r in changelog
                                            if r.partition is not None})
            return self.order.then(self._write(outbound_records(result.outbound), changelog,
                                               tenure, update, sampled))

    async def _write(self, outbound: list[OutboundRecord], changelog: list[OutboundRecord],
                     tenure: Mapping[int, object], update: BoardUpdate,
                     produced_ms: list[int]) -> None:
        """Redis alongside Kafka: its values are absolute, so if a crash loses the
        changelog the batch is replayed and rewrites the same values. Redis first: its
        request leaves before the changelog's sends take the event loop. Nothing is
        sent for a batch built before a stall (its partitions went to another worker;
        the offsets of a generation the group left are never committed)."""
        if not self.fence.current(update.fences):
            return
        await asyncio.gather(self.write_redis(update),
                             self.changelog.persist(outbound, changelog, tenure))
        self.metrics.observe_latency(produced_ms, int(time.time() * 1000))
