"""The changelog writer: a batch's state records, and the sends of everything it produces.

Responsible for:

* encoding the state records of a batch: each changed account's (one, or its part
  records and then it: streams/core/state.py), the partition's campaign-series chunks
  that grew or left the span (streams/core/series.py), and its new dedup segments
  (the newest carrying its progress) and expired ones (tombstones), applying the
  chunks and segments to the partition-state table too;
* sending records and waiting for the broker's acks, bounded by `PRODUCE_TIMEOUT`,
  retried on transient failures (streams/worker/retry.py).

Dead letters and re-keyed copies go first: the progress in the changelog says they
were sent (tests/integration/test_crash_trials.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from streams.core.aggregate import BatchResult, Outbound, PartitionRuntime
from streams.core.dedup import DedupCut
from streams.core.series import ChunkRecord, chunk_key, encode_chunk
from streams.core.state import NO_STAMP, AccountState, encode_segment, segment_key
from streams.worker.retry import PRODUCER_LOST, RetryWatcher, retrying, unwrapped

log = logging.getLogger(__name__)

#: seconds a batch's sends may take before they are sent again: the crash trials caught
#: a send whose future never resolved, holding every later batch (test_crash_trials.py)
PRODUCE_TIMEOUT = 20.0


class OutboundRecord(NamedTuple):
    """One record to produce, with an explicit partition or None (the key decides)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]] | None


#: faust's `producer.send(topic, key, value, partition, timestamp, headers)`: returns
#: the future of the broker's ack
Send = Callable[..., Awaitable[Awaitable[Any]]]
#: (topic, partition, offset) of acked changelog records, and each partition's owner
#: when they were built (OwnRecordsRead.acked)
Acked = Callable[[Iterable[tuple[str, int, int]], Mapping[int, object]], None]


def outbound_records(outbound: Sequence[Outbound]) -> list[OutboundRecord]:
    """Dead letters and re-keyed copies as records (partitioned by their key)."""
    return [OutboundRecord(o.topic, o.key, o.value, None, list(o.headers) or None)
            for o in outbound]


class ChangelogWriter:
    """Encodes a batch's state records and sends records until the broker has them."""

    def __init__(self, send: Send, accounts_topic: str, partitions_topic: str,
                 segments: MutableMapping[str, Any],
                 runtimes: Mapping[int, PartitionRuntime],
                 watcher: RetryWatcher | None = None,
                 dedup_cut: Callable[[int, DedupCut], None] | None = None,
                 generation: Callable[[], int] = lambda: 0,
                 renew: Callable[[], Awaitable[None]] | None = None,
                 acked: Acked | None = None) -> None:
        self.send = send
        #: told of the changelog records the broker acked (streams/kafka/written.py)
        self.acked = acked
        #: replaces the producer when the broker no longer follows its sequence
        self.renew = renew
        #: the consumer group's generation now: the owner epoch of the records built
        self.generation = generation
        self.dedup_cut = dedup_cut  # told when the cap forgets ids early (metrics.py)
        self.watcher = watcher  # told of failing sends (the worker's liveness)
        self.accounts_topic = accounts_topic
        self.partitions_topic = partitions_topic
        #: the partition-state table: segment key -> (partition, Segment, progress | None),
        #: and chunk key -> ChunkRecord
        self.segments = segments
        self.runtimes = runtimes

    def records(self, result: BatchResult, clock_ms: int, now_ms: int,
                fences: Mapping[int, tuple[int, int]]) -> list[OutboundRecord]:
        """The state records of a batch, each account with the stamp of the board update
        that carries it (`fences`); also applies segment changes to the table."""
        for state in result.accounts.values():
            state.board_stamp = fences.get(state.partition, NO_STAMP)
        records = self.account_records(result.accounts.values(), clock_ms)
        for partition, changes in result.series.items():
            epoch = self.epoch(partition)
            for key, chunk in changes.records:
                if chunk is not None:
                    chunk = replace(chunk, epoch=epoch)
                records.append(OutboundRecord(
                    self.partitions_topic, key.encode(),
                    None if chunk is None else encode_chunk(chunk), partition, None))
                if chunk is None:
                    self.segments.pop(key, None)
                else:
                    self.segments[key] = chunk
        for partition in result.partitions:
            records += self._segments(partition, now_ms)
        return records

    def epoch(self, partition: int) -> int:
        """The owner epoch of a record built now: the group's generation, or the newest
        epoch restored for the partition if that is newer (a group created anew)."""
        runtime = self.runtimes.get(partition)
        return max(self.generation(), runtime.epoch_floor if runtime else 0)

    def account_records(self, states: Iterable[AccountState],
                        clock_ms: int) -> list[OutboundRecord]:
        """The records of these accounts' states (each whole, or in parts and then it),
        in this owner's epoch."""
        topic = self.accounts_topic
        records = []
        for state in states:
            state.epoch = self.epoch(state.partition)
            records += [OutboundRecord(topic, key.encode(), value, state.partition, None)
                        for key, value in state.records(clock_ms)]
        return records

    def chunk_records(self, chunks: Iterable[ChunkRecord]) -> list[OutboundRecord]:
        """The records of these series chunks as they stand, in this owner's epoch (the
        table keeps the chunks so stamped)."""
        records = []
        for chunk in chunks:
            chunk = replace(chunk, epoch=self.epoch(chunk.partition))
            key = chunk_key(chunk.partition, chunk.campaign, chunk.step, chunk.start)
            self.segments[key] = chunk
            records.append(OutboundRecord(self.partitions_topic, key.encode(),
                                          encode_chunk(chunk), chunk.partition, None))
        return records

    def _segments(self, partition: int, now_ms: int) -> list[OutboundRecord]:
        runtime = self.runtimes[partition]
        progress = runtime.progress
        records = []
        sealed = runtime.recent.seal(progress.seq, now_ms)
        progress.seq += len(sealed)
        for segment, ids in sealed:
            carried = replace(progress, watermarks=list(progress.watermarks)) \
                if segment is sealed[-1].segment else None
            key = segment_key(partition, segment.seq)
            records.append(OutboundRecord(self.partitions_topic, key,
                                          encode_segment(partition, segment, ids, carried),
                                          partition, None))
            self.segments[key.decode()] = (partition, segment, carried)
        for seq in runtime.recent.expire(now_ms):
            key = segment_key(partition, seq)
            records.append(OutboundRecord(self.partitions_topic, key, None, partition, None))
            self.segments.pop(key.decode(), None)
        cut = runtime.recent.take_cut()
        if cut is not None and self.dedup_cut is not None:
            self.dedup_cut(partition, cut)
        return records

    def tenure(self, partitions: Iterable[int]) -> dict[int, object]:
        """What owns these partitions now: their runtimes, to tell at the ack whether
        they were kept since (OwnRecordsRead)."""
        return {p: self.runtimes.get(p) for p in partitions}

    async def persist(self, outbound: list[OutboundRecord], changelog: list[OutboundRecord],
                      tenure: Mapping[int, object] | None = None) -> None:
        """Dead letters and re-keyed copies, then the changelog, each until acked;
        then the acked changelog records are told (`acked`) with the partitions' owners
        when they were built (`tenure`)."""
        await retrying("sending dead letters and re-keyed events",
                       lambda: self.send_all(outbound), watcher=self.watcher)
        acks = await retrying("writing the changelog", lambda: self.send_all(changelog),
                              watcher=self.watcher)
        if self.acked is not None and tenure:
            self.acked(((m.topic, m.partition, m.offset) for m in acks), tenure)

    async def send_all(self, records: list[OutboundRecord]) -> list[Any]:
        """Send all, then wait until the broker has every one (within PRODUCE_TIMEOUT);
        their acks' metadata (topic, partition, offset), in order.

        Sending again is safe: state records are absolute, re-keyed copies are
        recognised by their origin, and dead letters are at-least-once.
        """
        async def sent() -> list[Any]:
            futures = [await self.send(r.topic, r.key, r.value, r.partition, None, r.headers)
                       for r in records]
            return list(await asyncio.gather(*futures)) if futures else []

        try:
            return await asyncio.wait_for(sent(), PRODUCE_TIMEOUT)
        except Exception as exc:
            if self.renew is not None and isinstance(unwrapped(exc), PRODUCER_LOST):
                log.warning("the broker no longer follows this producer's sequence (%r): "
                            "a new producer sends from now on", unwrapped(exc))
                await self.renew()
            raise
