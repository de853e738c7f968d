"""The worker's batch handler: aggregate a batch, then send, persist and publish it.

Order per batch, each step awaited before the next:

1. aggregate (pure, in memory): every record of the batch, each account once;
2. send dead letters and re-keyed messages;
3. write changed state to the changelogs (one record per changed account, one dedup
   segment per partition carrying its counters and watermarks);
4. rewrite Redis for what changed (absolute values).

The consumer commits the batch's offsets only after all of this (streams/transport.py).
A crash anywhere replays the batch; the watermarks in state make the replay send,
count and apply nothing twice, and the replayed accounts are rewritten in Redis.
I/O failures (broker or Redis away) are retried with backoff on the same
aggregated result, so the in-memory state is never applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import faust
import redis.asyncio as aioredis

from streams.aggregate import (
    BatchAggregator,
    BatchResult,
    PartitionRuntime,
    restore_runtime,
)
from streams.app import Wiring
from streams.dedup import RecentEventIds
from streams.settings import Settings
from streams.sink import RedisBoardWriter, RedisKeys
from streams.state import AccountState, encode_segment, segment_key
from streams.transport import BatchConductor, RecordBatch
from streams.windows import FixedWindows

log = logging.getLogger(__name__)

#: ids per dedup segment record (keeps each record far below Kafka's 1 MB default)
SEGMENT_IDS = 5_000
T = TypeVar("T")
#: (topic, key, value, partition, headers)
Message = tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None]


class BatchPipeline:
    """Owns the live per-partition runtimes and drives one batch at a time."""

    def __init__(self, wiring: Wiring, settings: Settings, redis: aioredis.Redis) -> None:
        self.wiring = wiring
        self.settings = settings
        self.app: faust.App = wiring.app
        self.windows = FixedWindows(settings.named_periods)
        self.runtimes: dict[int, PartitionRuntime] = {}
        self.accounts: Any = wiring.accounts.data
        self.aggregator = BatchAggregator(
            wiring.topics, self.windows, settings.partitions, self.accounts, self.runtimes,
            check_future=settings.clock == "wall",
        )
        self.writer = RedisBoardWriter(redis, RedisKeys(settings.prefix), self.windows)
        self.batches = 0
        self.events = 0
        self.records = 0
        self._reported = (time.monotonic(), 0, 0, 0)

    def install(self) -> None:
        """Become the conductor's batch handler; drop runtimes of revoked partitions."""
        conductor = self.app.topics
        assert isinstance(conductor, BatchConductor)
        conductor.batch_handler = self

        self.app.on_partitions_revoked.connect(self._forget)  # type: ignore[arg-type]

    async def _forget(self, app: Any, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            self.runtimes.pop(tp.partition, None)

    def _recent(self) -> RecentEventIds:
        s = self.settings
        return RecentEventIds(s.dedup_min_events, int(s.dedup_min_seconds * 1000))

    def _restore(self, partitions: set[int]) -> None:
        """Rebuild runtimes of newly owned partitions from the recovered tables."""
        segments: dict[int, list[Any]] = {p: [] for p in partitions}
        for partition, segment, header in self.wiring.partitions.data.values():
            if partition in segments:
                segments[partition].append((segment, header))
        accounts: dict[int, list[AccountState]] = {p: [] for p in partitions}
        for state in self.accounts.values():
            if state.partition in accounts:
                accounts[state.partition].append(state)
        for p in partitions:
            self.runtimes[p] = restore_runtime(p, self._recent(), segments[p], accounts[p])
            log.info("partition %d: %d accounts, %d events counted so far",
                     p, len(accounts[p]), self.runtimes[p].header.events)

    async def __call__(self, batch: RecordBatch) -> None:
        missing = {tp.partition for tp in batch} - self.runtimes.keys()
        if missing:
            self._restore(missing)
        result = self.aggregator.process(batch)
        now_ms = int(time.time() * 1000)
        outbound: list[Message] = [(o.topic, o.key, o.value, None, list(o.headers) or None)
                                   for o in result.outbound]
        changelog = self._changelog(result, now_ms)
        await self._retrying("sending dead letters and re-keyed events",
                             lambda: self._produce(outbound))
        await self._retrying("writing the changelog", lambda: self._produce(changelog))
        clock = None if self.settings.clock == "event" else now_ms
        await self._retrying("writing Redis", lambda: self.writer.write(
            result.accounts.values(), result.profiles, self.runtimes, result.campaigns,
            result.partitions, clock, now_ms))
        self.batches += 1
        self.events += result.counted
        self.records += sum(len(records) for records in batch.values())
        self._report()

    def _report(self, every: float = 10.0) -> None:
        """Log throughput now and then: events/s, batches, records per batch."""
        at, events, batches, records = self._reported
        now = time.monotonic()
        if now - at < every:
            return
        n_batches = self.batches - batches
        log.info("%.0f events/s counted, %d batches of %.0f records on average, %d accounts",
                 (self.events - events) / (now - at), n_batches,
                 (self.records - records) / max(1, n_batches), len(self.accounts))
        self._reported = (now, self.events, self.batches, self.records)

    def _changelog(self, result: BatchResult, now_ms: int) -> list[Message]:
        """The state records of a batch; also applies segment changes to the table."""
        accounts_topic = self.wiring.accounts.changelog_topic.get_topic_name()
        partitions_topic = self.wiring.partitions.changelog_topic.get_topic_name()
        records: list[Message] = [
            (accounts_topic, state.account_id.encode(), state.encode(), state.partition, None)
            for state in result.accounts.values()
        ]
        segments = self.wiring.partitions.data
        for partition in result.partitions:
            runtime = self.runtimes[partition]
            header = runtime.header
            sealed = runtime.recent.seal(header.seq, now_ms, SEGMENT_IDS)
            header.seq += len(sealed)
            for segment in sealed:
                carried = replace(header, watermarks=list(header.watermarks)) \
                    if segment is sealed[-1] else None
                key = segment_key(partition, segment.seq)
                records.append((partitions_topic, key,
                                encode_segment(partition, segment, carried), partition, None))
                segments[key.decode()] = (partition, segment, carried)
            for seq in runtime.recent.expire(now_ms):
                key = segment_key(partition, seq)
                records.append((partitions_topic, key, None, partition, None))
                segments.pop(key.decode(), None)
        return records

    async def _produce(self, messages: list[Message]) -> None:
        """Send all, then wait until the broker has every one."""
        send = self.app.producer.send
        futures = [await send(topic, key, value, partition, None, headers)
                   for topic, key, value, partition, headers in messages]
        if futures:
            await asyncio.gather(*futures)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        delay = 0.2
        while True:
            try:
                return await step()
            except (TimeoutError, OSError, aioredis.RedisError) as exc:
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            except Exception as exc:
                if type(exc).__module__.startswith(("aiokafka", "kafka")):
                    log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
                else:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
