"""The worker's batch handler: aggregate a batch, then send, persist and publish it.

Order per batch:

1. aggregate (pure, in memory): every record of the batch, each account once;
2. send dead letters and re-keyed messages, then
3. write changed state to the changelogs (one record per changed account, one dedup
   segment per partition carrying its counters and watermarks);
4. meanwhile, rewrite Redis for what changed (absolute values).

The consumer commits the batch's offsets only after all of this (streams/transport.py).
A crash anywhere replays the batch; the watermarks in state make the replay send,
count and apply nothing twice, and the replayed accounts are rewritten in Redis.
I/O failures (broker or Redis away) are retried with backoff on the same
aggregated result, so the in-memory state is never applied twice.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from typing import Any, TypeVar

import faust
import redis.asyncio as aioredis

from streams.core.aggregate import (
    BatchAggregator,
    BatchResult,
    PartitionRuntime,
    restore_runtime,
)
from streams.core.dedup import RecentEventIds
from streams.core.scoring import account_view, scoring_config
from streams.core.state import AccountState, encode_segment, segment_key
from streams.core.windows import Windows
from streams.kafka.app import Wiring
from streams.kafka.recovered import tables_recovered
from streams.kafka.transport import BatchConductor, RecordBatch, left_to_read
from streams.ops.settings import Settings
from streams.sink.writer import BoardUpdate, RedisBoardWriter, RedisKeys
from streams.worker.metrics import SAMPLE_EVERY, WorkerMetrics

log = logging.getLogger(__name__)

#: ids per dedup segment record (keeps each record far below Kafka's 1 MB default)
SEGMENT_IDS = 5_000
#: seconds between two publications of the worker's metrics
METRICS_INTERVAL = 5.0
#: seconds between decay ticks under the wall clock (boards decay within about this)
DECAY_INTERVAL = 1.0
#: seconds a batch's sends may take before they are sent again
PRODUCE_TIMEOUT = 20.0
#: allocations between two collections of the young generation (Python's default: 700)
GC_YOUNG_THRESHOLD = 50_000
#: seconds between two checks that Redis still holds its data (the generation marker)
REDIS_CHECK_INTERVAL = 1.0
#: accounts per write when the whole layout is rewritten (processing goes on in between)
REWRITE_CHUNK = 2_000
T = TypeVar("T")
#: (topic, key, value, partition, headers)
Message = tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None]


class BatchPipeline:
    """Owns the live per-partition runtimes and drives one batch (or decay tick) at a time."""

    def __init__(self, wiring: Wiring, settings: Settings, redis: aioredis.Redis) -> None:
        self.wiring = wiring
        self.settings = settings
        self.app: faust.App = wiring.app
        self.windows = Windows(settings.named_periods)
        self.scoring = scoring_config(settings)
        self.event_clock = settings.clock == "event"
        self.runtimes: dict[int, PartitionRuntime] = {}
        self.accounts: Any = wiring.accounts.data
        self.aggregator = BatchAggregator(
            wiring.topics, self.windows, settings.partitions, self.accounts, self.runtimes,
            check_future=not self.event_clock,
        )
        self.writer = RedisBoardWriter(redis, RedisKeys(settings.prefix), self.windows)
        self.lock = asyncio.Lock()
        self._last_write: asyncio.Future[None] | None = None
        self._event_clock_ms = 0
        self.metrics = WorkerMetrics()
        self._reported = (time.monotonic(), 0, 0, 0)
        #: the Redis data generation this worker's writes went to (None before the first)
        self._generation: str | None = None
        self._rewrites: set[asyncio.Future[None]] = set()
        self._changelog_topics = [table.changelog_topic.get_topic_name()
                                  for table in (wiring.accounts, wiring.partitions)]

    def install(self) -> None:
        """Become the conductor's batch handler; decay on a timer; forget revoked partitions."""
        # A batch allocates about ten objects per record and frees them by reference
        # counting; the default collector thresholds (700) would walk the young objects
        # every few dozen records and the whole heap every few thousand, a third of the
        # worker's CPU in profiles. Rare collections still reclaim any cycles.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
        conductor = self.app.topics
        assert isinstance(conductor, BatchConductor)
        conductor.batch_handler = self
        conductor.batch_ready = self.ready
        self.app.on_partitions_revoked.connect(self._forget)  # type: ignore[arg-type]
        self.app.on_rebalance_complete.connect(self._on_recovery)
        if not self.event_clock:
            self.app.timer(interval=DECAY_INTERVAL)(self._tick)
        self.app.timer(interval=METRICS_INTERVAL)(self._publish_metrics)
        self.app.timer(interval=REDIS_CHECK_INTERVAL)(self._check_redis)

    async def _forget(self, app: Any, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            self.runtimes.pop(tp.partition, None)

    def ready(self, tp: Any) -> bool:
        """May records of this source partition be applied? Only once its runtime is
        restored, or its tables are read to the end so that it can be."""
        return tp.partition in self.runtimes or self._recovered(tp.partition)

    def _recovered(self, partition: int) -> bool:
        return tables_recovered(self.app.tables.recovery,  # type: ignore[attr-defined]
                                self._changelog_topics, partition)

    async def _on_recovery(self, *_: Any, **__: Any) -> None:
        """Tables read: restore the owned partitions now, not at their first batch, so
        decay and Redis rewrites cover them before any new event arrives. (faust also
        sends this signal for an assignment a newer one has replaced: only partitions
        whose tables are read to the end are restored.)"""
        async with self.lock:
            found = {p for p in self._assigned() - self.runtimes.keys() if self._recovered(p)}
            if found:
                self._restore(found)

    def _assigned(self) -> set[int]:
        conductor = self.app.topics
        assert isinstance(conductor, BatchConductor)
        return {tp.partition for tp in self.app.consumer.assignment()
                if tp.topic in conductor.batch_topics}

    def clock(self) -> int:
        """The wall clock, or the largest event time seen (never moving back)."""
        if not self.event_clock:
            return int(time.time() * 1000)
        for runtime in self.runtimes.values():
            self._event_clock_ms = max(self._event_clock_ms, runtime.progress.clock)
        return self._event_clock_ms

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
        clock = self.clock()
        for p in partitions:
            self.runtimes[p] = restore_runtime(p, self._recent(), segments[p], accounts[p],
                                               self.windows, clock)
            log.info("partition %d: %d accounts, %d events counted so far",
                     p, len(accounts[p]), self.runtimes[p].progress.events)
        if any(accounts[p] or self.runtimes[p].progress.events or self.runtimes[p].progress.dlq
               for p in partitions):
            # The previous owner (or this worker, before a crash) may have written the
            # changelog of its last batches but not their Redis writes: a replay of those
            # batches changes no state, so only a rewrite restores their accounts, their
            # decay and their campaign totals.
            task = asyncio.ensure_future(self.rewrite_all(
                "partitions recovered from the changelog", partitions))
            self._rewrites.add(task)
            task.add_done_callback(self._rewrites.discard)

    async def __call__(self, batch: RecordBatch) -> asyncio.Future[None]:
        """Apply a batch now; returns its writes, which run after the previous batch's.

        The consumer fetches and applies the next batch while these writes are in
        flight, and marks this batch's offsets committable only once they are done.
        """
        async with self.lock:
            missing = {tp.partition for tp in batch} - self.runtimes.keys()
            if missing:
                # the consumer delivers no records before `ready`; a rebalance since
                # then may have taken the partition away or started reading it again
                late = {p for p in missing if not self._recovered(p)}
                if late:
                    log.warning("partitions %s: tables no longer read to the end; "
                                "their records are left for the next fetch", sorted(late))
                    batch = {tp: recs for tp, recs in batch.items() if tp.partition not in late}
                self._restore(missing - late)
            result = self.aggregator.process(batch, self.clock())
            clock = self.clock()
            now_ms = int(time.time() * 1000)
            # (no pruning of the batch's accounts: sums skip old buckets, and every bucket
            # is due once, when the decay schedule prunes its account)
            decayed = self._due(clock)
            outbound: list[Message] = [(o.topic, o.key, o.value, None, list(o.headers) or None)
                                       for o in result.outbound]
            changelog = self._changelog(result, now_ms)
            states = {**decayed, **result.accounts}
            partitions = result.partitions | {s.partition for s in decayed.values()}
            update = self._board_update(states.values(), result.profiles, partitions, clock,
                                        now_ms)
            metrics = self.metrics
            metrics.batches += 1
            metrics.events += result.counted
            metrics.dead_letters += result.dead_lettered
            metrics.records += sum(len(records) for records in batch.values())
            self._track_lag(batch)
            self._report()
            sample = [r.timestamp for records in batch.values()
                      for r in records[::SAMPLE_EVERY]]
            return self._then(self._write(outbound, changelog, update, sample))

    async def _write(self, outbound: list[Message], changelog: list[Message],
                     update: BoardUpdate, produced_ms: list[int]) -> None:
        async def persist() -> None:
            # dead letters and re-keyed copies first: the changelog's watermarks say
            # that they were sent
            await self._retrying("sending dead letters and re-keyed events",
                                 lambda: self._produce(outbound))
            await self._retrying("writing the changelog", lambda: self._produce(changelog))

        # Redis alongside: its values are absolute, so if a crash loses the changelog
        # the batch is replayed from the committed offsets and rewrites the same values.
        # Redis first: its request leaves before the changelog's sends take the loop,
        # and Redis applies it meanwhile on its own core.
        await asyncio.gather(self._write_update(update), persist())
        self.metrics.observe_latency(produced_ms, int(time.time() * 1000))

    def _track_lag(self, batch: RecordBatch) -> None:
        """Messages behind the end of each partition, after this batch."""
        for tp, left in left_to_read(self.app.consumer, batch).items():
            self.metrics.lag[f"{tp.topic}:{tp.partition}"] = left

    async def _publish_metrics(self, *_: Any) -> None:
        try:
            await self.writer.client.hset(self.writer.keys.worker_metrics,
                                          self.metrics.worker, self.metrics.snapshot())
        except aioredis.RedisError as exc:
            log.warning("could not publish metrics: %s", exc)

    def _then(self, write: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Run `write` after every write already queued: Redis and Kafka see batch order."""
        previous = self._last_write

        async def in_order() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await write

        self._last_write = asyncio.ensure_future(in_order())
        return self._last_write

    async def _tick(self, *_: Any) -> None:
        """Wall clock: re-score accounts whose buckets left a window, with no new event."""
        async with self.lock:
            if not self.runtimes:
                return
            clock = self.clock()
            update = self._board_update(self._due(clock).values(), set(), set(self.runtimes),
                                        clock, clock)
            write = self._then(self._write_update(update))
        await write

    async def _check_redis(self, *_: Any) -> None:
        """Notice a Redis that lost its data (FLUSHALL, restart without persistence).

        The generation marker is set once per life of the data. Missing or changed
        means Redis no longer holds what this worker wrote: it rewrites the layout of
        every partition it owns from its state, while batches go on between chunks.
        """
        if self._generation is None:  # nothing written yet
            await self._adopt_generation()
            return
        try:
            if await self.writer.generation() == self._generation:
                return
            self._generation = await self.writer.claim_generation()
        except aioredis.RedisError as exc:
            log.warning("could not check the Redis generation marker: %s", exc)
            return
        log.warning("Redis has lost its data (generation marker gone or replaced)")
        await self.rewrite_all("Redis lost its data")

    async def _adopt_generation(self) -> None:
        """Before this worker's first Redis write: adopt the marker in force, or claim one
        for a new (or emptied) Redis. What Redis lacks then is what was recovered, and
        `_restore` rewrites that; what this worker writes from here on is checked."""
        try:
            self._generation = (await self.writer.generation()
                                or await self.writer.claim_generation())
        except aioredis.RedisError as exc:
            log.warning("could not read the Redis generation marker: %s", exc)

    async def rewrite_all(self, why: str, partitions: set[int] | None = None) -> None:
        """Rewrite every owned account, campaign total and counter in Redis from state
        (of the given partitions only, when named)."""
        started = time.monotonic()
        async with self.lock:
            owned = [s.account_id for s in self.accounts.values() if s.partition in self.runtimes
                     and (partitions is None or s.partition in partitions)]
        if not owned and not self.runtimes:
            return
        log.info("%s: rewriting %d accounts of %d partitions from state", why,
                 len(owned), len(self.runtimes))
        write: asyncio.Future[None] | None = None
        for start in range(0, len(owned), REWRITE_CHUNK):
            async with self.lock:
                clock = self.clock()
                # each account as it is now (batches run between chunks)
                found = (self.accounts.get(a) for a in owned[start:start + REWRITE_CHUNK])
                chunk = [s for s in found if s is not None and s.partition in self.runtimes]
                for state in chunk:
                    state.prune(clock)
                # Redis may list an account under the category it had before the state
                # being written (a profile whose batch's Redis write a crash lost): every
                # account's listed category is looked up and its old board left
                write = self._then(self._write_update(self._board_update(
                    chunk, {s.account_id for s in chunk}, (), clock,
                    int(time.time() * 1000))))
            await write
        async with self.lock:
            clock = self.clock()
            campaigns = {(p, c): {w: list(sums) for w, sums in totals.items()}
                         for p, runtime in self.runtimes.items()
                         for c, totals in runtime.campaigns.totals.items()}
            update = self._board_update([], set(), self.runtimes, clock, clock)
            write = self._then(self._write_update(replace(update, campaigns=campaigns)))
        await write
        log.info("Redis rewritten from state: %d accounts in %.1fs", len(owned),
                 time.monotonic() - started)

    async def _write_update(self, update: BoardUpdate) -> None:
        if self._generation is None:
            await self._adopt_generation()
        await self._retrying("writing Redis", lambda: self.writer.write(update))

    def _due(self, clock: int) -> dict[str, AccountState]:
        """Accounts with a bucket that left a rolling window by `clock`, pruned."""
        found: dict[str, AccountState] = {}
        for runtime in self.runtimes.values():
            for account_id in runtime.schedule.pop_due(clock):
                state = self.accounts.get(account_id)
                if state is not None:
                    state.prune(clock)
                    found[account_id] = state
        self.metrics.decayed += len(found)
        return found

    def _board_update(self, states: Iterable[AccountState], profiles: set[str],
                      partitions: Iterable[int], clock: int, now_ms: int) -> BoardUpdate:
        """Score the accounts at `clock` and fold them into campaign totals, as of now."""
        views = [account_view(state, self.windows, clock, self.scoring) for state in states]
        campaigns: dict[tuple[int, str], dict[str, list[int]]] = {}
        for view in views:
            totals = self.runtimes[view.partition].campaigns
            for campaign in totals.update(view):
                campaigns[view.partition, campaign] = {
                    window: list(sums) for window, sums in totals.totals[campaign].items()}
        counters = {p: (self.runtimes[p].progress.events, self.runtimes[p].progress.dlq)
                    for p in partitions}
        return BoardUpdate(views, profiles, campaigns, counters, clock, now_ms)

    def _report(self, every: float = 10.0) -> None:
        """Log throughput now and then: events/s, batches, records per batch."""
        at, events, batches, records = self._reported
        now = time.monotonic()
        if now - at < every:
            return
        m = self.metrics
        n_batches = m.batches - batches
        log.info("%.0f events/s counted, %d batches of %.0f records on average, %d accounts, "
                 "%d re-scored by decay, lag %d", (m.events - events) / (now - at), n_batches,
                 (m.records - records) / max(1, n_batches), len(self.accounts), m.decayed,
                 sum(m.lag.values()))
        self._reported = (now, m.events, m.batches, m.records)

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
            header = runtime.progress
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
        """Send all, then wait until the broker has every one.

        Bounded by PRODUCE_TIMEOUT: the crash trials caught a send whose future never
        resolved (aiokafka, after broker restarts and rebalances), which held every
        later batch. Sending again is safe: state records are absolute, re-keyed copies
        are recognised by their origin, and dead letters are at-least-once.
        """
        async def send_all() -> None:
            send = self.app.producer.send
            futures = [await send(topic, key, value, partition, None, headers)
                       for topic, key, value, partition, headers in messages]
            if futures:
                await asyncio.gather(*futures)

        await asyncio.wait_for(send_all(), PRODUCE_TIMEOUT)

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
