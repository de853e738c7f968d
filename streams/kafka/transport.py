"""A faust transport that hands whole fetched record batches to one batch handler.

Stock faust delivers every Kafka message on its own (a Message object, a channel
queue, a stream step, an ack), which costs more CPU than rankflow's own work on an event
(figures in docs/performance.md). rankflow's topics are instead
delivered as the record batches aiokafka fetched, to `BatchConductor.batch_handler`.
Everything else stays faust's: the consumer group, partition assignment, table
recovery (changelog records reach it one at a time, except the fetches it reads in
bulk: streams/kafka/bulk_read.py), offset commits.

The handler applies a batch and returns its pending writes (an awaitable); the consumer
fetches and applies the next batch while one batch's writes are in flight.

Invariants (the first three held by tests/integration/test_crash_trials.py and
test_restart.py, SIGKILL and SIGTERM in the middle of a replay):

* A batch's offsets become committable only after its writes are done, in batch order,
  and only in the consumer generation that fetched it: a rebalance never commits work
  it lost.
* A batch is never cut off: fetcher cancellation waits for the handler (shielded), and
  `wait_empty` (what faust awaits before giving partitions away, and on shutdown) waits
  for every pending write, then commits. So a revoked partition's state is complete
  before a new owner reads it.
* Records at or past the read offset only: after a seek to the committed offset a
  batch resumes exactly where the last committed one ended.
* Records of a partition the handler is not ready for (its tables not read to the end
  yet, `BatchConductor.batch_ready`) are not delivered: the partition is sought back to
  its first such record and fetched again later
  (tests/test_recovered.py::test_the_consumer_holds_back_a_partition_until_its_tables_are_read).
* No fetched record is dropped for good: what is not delivered (the flow stopped by a
  rebalance, a partition paused since the fetch, or held back) is sought back to
  (`_rewind`), unless something moved its partition since
  (tests/test_app.py::test_records_dropped_undelivered_are_fetched_again).

Registered as the `rankflow://` broker scheme (entry point `faust.transports`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from aiokafka.errors import ConsumerStoppedError, IllegalStateError
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TopicT
from mode import Service
from mode.utils.objects import cached_property

from streams.kafka.bulk_read import BulkChangelogReader
from streams.kafka.fetched import fetched_round

log = logging.getLogger(__name__)

RecordBatch = Mapping[TP, Sequence[Any]]
#: applies a batch; returns what is left to wait for (its writes), or None
BatchHandler = Callable[[RecordBatch], Awaitable[Awaitable[None] | None]]
#: may records of this partition be delivered now?
BatchReady = Callable[[TP], bool]
#: batches whose writes may be in flight while the next batch is applied (catching up)
MAX_PENDING_WRITES = 1
#: seconds between two fetches of a held-back partition
HELD_BACK_PAUSE = 0.05
#: how long the broker may hold a fetch that finds no new record (faust sets 1,500 ms)
FETCH_MAX_WAIT_MS = 100
#: seconds a batch may take before the records buffered meanwhile count as stale
STALE_AFTER = 0.05
#: seconds to wait for the fetch that refreshes stale records: one fetch wait, as a
#: fetch held for idle partitions may be in flight
REFRESH_WAIT = 0.15


class BatchTopic:
    """Marker for faust topics whose records go to the batch handler."""

    batch_delivery = True


class BatchConductor(Conductor):
    """Routes the topics marked `batch_delivery` to one batch handler."""

    batch_handler: BatchHandler | None = None
    batch_ready: BatchReady = staticmethod(lambda tp: True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_topics: set[str] = set()

    def add(self, topic: TopicT) -> None:
        if getattr(topic, "batch_delivery", False):
            self.batch_topics.update(topic.topics)
        super().add(topic)

    async def on_batch(self, batch: RecordBatch) -> Awaitable[None] | None:
        if self.batch_handler is None:
            raise RuntimeError("no batch handler is set on the conductor")
        return await self.batch_handler(batch)


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with a short fetch wait.

    aiokafka keeps one fetch in flight per broker, for the partitions that have no
    records buffered. When the busy partitions still had records buffered as the fetch
    was sent, it asks only for idle ones (profiles, re-keyed events, changelogs), and
    the broker holds it for the whole wait: faust's 1,500 ms stalled every busy
    partition that long, several times a minute under live load (figures in
    docs/performance.md). Held by
    tests/test_app.py::test_the_worker_consumer_fetches_with_a_short_wait.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start(), which creates the fetcher
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 (ledger: _fetch_max_wait_ms)
        return consumer

    async def _fetch_records(self, consumer: Any, active_partitions: set[TP] | None,
                             timeout: float | None = None,
                             max_records: int | None = None) -> dict[TP, list[Any]]:
        """faust's fetch, with the batch topics' records taken whole as aiokafka's own
        record objects (streams/kafka/fetched.py); the rest as faust takes them."""
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher  # noqa: SLF001 (ledger: AIOKafkaConsumer._fetcher)
        if (consumer._closed  # noqa: SLF001 (ledger: AIOKafkaConsumer._closed)
                or fetcher._closed):  # noqa: SLF001 (ledger: Fetcher._closed)
            raise ConsumerStoppedError()
        batch_consumer: Any = self.consumer  # a BatchConsumer; faust types it ConsumerT
        conductor = batch_consumer._conductor  # noqa: SLF001 (ledger: BatchConsumer._conductor)
        batch_topics = conductor.batch_topics
        deadline = time.monotonic() + (timeout or 0.0)
        subscriptions = fetcher._subscriptions  # noqa: SLF001 (ledger: Fetcher._subscriptions)
        with subscriptions.fetch_context():
            while True:
                if subscriptions.reassignment_in_progress:
                    await subscriptions.wait_for_assignment()
                records = await fetched_round(fetcher, active_partitions, batch_topics,
                                              max_records)
                remaining = deadline - time.monotonic()
                if (records or remaining <= 0
                        or fetcher._closed):  # noqa: SLF001 (ledger: Fetcher._closed)
                    return records
                waiter = (fetcher  # noqa: SLF001 (ledger: Fetcher._create_fetch_waiter)
                          ._create_fetch_waiter())
                done, _ = await asyncio.wait([waiter], timeout=remaining)
                if not done:
                    waiter.cancel()
                    return {}
                waiter.result()  # raises what the fetch met (authorization errors)


class BatchConsumer(faust_aiokafka.Consumer):
    """Drains fetched records in batches; commits what the batch handler finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: tp -> (consumer generation, next offset to commit)
        self._processed: dict[TP, tuple[int, int]] = {}
        self._n_processed = 0
        self._in_flight: asyncio.Future[None] | None = None
        #: (writes, batch, generation) in batch order
        self._pending: deque[tuple[asyncio.Future[None], RecordBatch, int]] = deque()
        #: partitions whose records were held back (logged once each)
        self._held: set[TP] = set()
        #: when fetched records were last taken from the buffer
        self._took = time.monotonic()

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @cached_property
    def _bulk_reader(self) -> BulkChangelogReader:
        return BulkChangelogReader(self.app)

    @cached_property
    def _conductor(self) -> BatchConductor:
        conductor = self.app.topics
        if not isinstance(conductor, BatchConductor):
            raise TypeError("BatchConsumer needs the rankflow transport's BatchConductor")
        return conductor

    async def _drain_messages(self, fetcher: Service) -> None:  # type: ignore[override]
        conductor = self._conductor
        fetcher_stopped = fetcher._stopped.is_set  # noqa: SLF001 (ledger: Service._stopped)
        try:
            while not (self.should_stop or fetcher_stopped()):
                records, active = await self._fetch()
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._rewind(records)
                    await self.perform_seek()
                    continue
                batch = await self._split(records, active, conductor.batch_topics,
                                          self.app.consumer_generation_id)
                if batch:
                    await self._run_batch(conductor, batch)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _fetch(self) -> tuple[RecordBatch, set[TP] | None]:
        """The next fetched records; if they waited in the buffer while the last batch
        ran long and were all there was, with what has arrived since (`_refreshed`).
        (Catching up, the buffer holds more than one batch anyway.)"""
        asked = time.monotonic()
        fetched, active = await self._wait_next_records(timeout=1.0)
        records: RecordBatch = fetched or {}
        buffered = time.monotonic() - asked < STALE_AFTER
        if (records and buffered and asked - self._took > STALE_AFTER and self.flow_active
                and not self.should_stop and not any(left_to_read(self, records).values())):
            records, active = await self._refreshed(records, active)
        self._took = time.monotonic()
        return records, active

    async def _refreshed(self, records: RecordBatch,
                         active: set[TP] | None) -> tuple[RecordBatch, set[TP] | None]:
        """The records of a long batch's wait, with what has arrived since.

        aiokafka fetches a partition again only once its buffered records are taken, so
        what was buffered while the last batch ran was fetched as it started, and what
        arrived after waited for the next fetch: a whole batch of extra latency. Taking
        the buffer set that fetch off: its records join the stale ones. Two fetches of
        one consumer generation continue each other; across a rebalance both are
        sought back (`_rewind`) and nothing is delivered (tests/test_app.py: records that
        waited through a long batch, a rebalance between the two fetches).
        """
        generation = self.app.consumer_generation_id
        fetched, active = await self._wait_next_records(timeout=REFRESH_WAIT)
        more: RecordBatch = fetched or {}
        if self.app.consumer_generation_id != generation:
            await self._rewind(more)
            await self._rewind(records)
            return {}, active
        return _joined(records, more), active

    async def _rewind(self, records: RecordBatch) -> None:
        """Seek partitions back to fetched records that are dropped, not delivered.

        faust drops what a fetch returns while a rebalance has stopped its flow, or for
        a partition paused since the fetch, and counts on a later seek: the input
        topics' seek to their committed offsets, table recovery's seek of its changelog
        partitions when it starts reading. A partition with no committed offset yet is
        not sought, and records of a changelog fetched after recovery's seek were
        dropped before the flow resumed: both were lost (what the crash trials found:
        docs/performance.md). A partition is sought back only when nothing moved it
        since the fetch: its position is still just past the dropped records
        (tests/test_app.py::test_records_dropped_undelivered_are_fetched_again).
        """
        dropped = {tp: (recs[0].offset, recs[-1].offset + 1)
                   for tp, recs in records.items() if recs}
        if not dropped:
            return
        thread = self._thread

        async def rewind() -> None:
            consumer = thread._ensure_consumer()  # noqa: SLF001 (ledger: _ensure_consumer)
            for tp, (first, after) in dropped.items():
                try:
                    position = await consumer.position(tp)
                except IllegalStateError:  # no longer assigned
                    continue
                if position == after:
                    consumer.seek(tp, first)
                    self._read_offset[tp] = first

        await thread.call_thread(rewind)

    async def _split(self, records: RecordBatch, active: set[TP] | None,
                     batch_topics: set[str], generation: int = 0) -> dict[TP, Sequence[Any]]:
        """Batch-topic records to return; others (changelogs) go faust's usual way, one
        at a time, while the flow runs in the consumer generation that fetched them.

        A changelog record's delivery waits while a rebalance stops the flow; recovery
        then seeks its partitions anew. Records delivered after that would move the read
        offset past the seek and hide the partition's first records from its reading
        (tests/test_app.py::test_changelog_records_stop_at_a_rebalance)."""
        batch: dict[TP, Sequence[Any]] = {}
        held: dict[TP, Sequence[Any]] = {}
        read_offset = self._read_offset
        paused: dict[TP, Sequence[Any]] = {}
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                paused[tp] = recs  # since the fetch
                continue
            start = read_offset[tp]
            if start is not None and recs and recs[0].offset < start:
                recs = [r for r in recs if r.offset >= start]
            if not recs:
                continue
            if tp.topic in batch_topics:
                if self._conductor.batch_ready(tp):
                    batch[tp] = recs
                    self._held.discard(tp)
                    continue
                if tp not in self._held:
                    self._held.add(tp)
                    log.info("%s: held back until its tables are read; fetching again "
                             "from offset %d", tp, recs[0].offset)
                held[tp] = recs
                continue
            recs = await self._bulk_reader.take(tp, recs, generation,
                                                lambda: self.flow_active)
            for record in recs:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    break
                await self.callback(self._to_message(tp, record))
            else:
                read_offset[tp] = recs[-1].offset + 1
        if paused or held:
            await self._rewind({**paused, **held})
        if held:  # let faust read the changelogs before this partition is fetched again
            await asyncio.sleep(HELD_BACK_PAUSE)
        return batch

    async def _run_batch(self, conductor: BatchConductor, batch: dict[TP, Sequence[Any]]) -> None:
        task = self._in_flight = asyncio.ensure_future(self._apply(conductor, batch))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # The fetcher is stopping (rebalance or shutdown): the batch is applied in
            # full all the same, and its writes stay queued for `wait_empty`.
            await asyncio.wait([task])
            raise
        finally:
            if task.done():
                self._in_flight = None
        task.result()
        # Catching up, the next batch is applied while this one's writes are in flight;
        # live (less left to read than this batch held), its writes go first: on one
        # event loop they would otherwise wait for the next batch's whole apply.
        await self._settle(keep=MAX_PENDING_WRITES if self._catching_up(batch) else 0)
        if self._commit_every is not None and self._n_processed >= self._commit_every:
            self._n_processed = 0
            await self.commit()

    def _catching_up(self, batch: RecordBatch) -> bool:
        """More records wait on these partitions than this batch held."""
        return (sum(left_to_read(self, batch).values())
                > sum(len(recs) for recs in batch.values()))

    async def _apply(self, conductor: BatchConductor, batch: RecordBatch) -> None:
        """Apply a batch and queue its writes (one step: done means queued)."""
        generation = self.app.consumer_generation_id
        writes = await conductor.on_batch(batch)
        done = asyncio.ensure_future(writes) if writes is not None else _done()
        self._pending.append((done, batch, generation))

    async def _settle(self, keep: int) -> None:
        """Wait for the oldest writes until at most `keep` are pending; mark them done."""
        pending = self._pending
        while pending and (len(pending) > keep or pending[0][0].done()):
            writes, batch, generation = pending[0]
            await asyncio.wait([writes])
            if not pending or pending[0][0] is not writes:
                continue  # a rebalance's wait_empty settled it meanwhile (test_fencing.py)
            pending.popleft()
            writes.result()  # a failed write stops the worker: skipping it would lose data
            self._mark_processed(batch, generation)

    def _mark_processed(self, batch: RecordBatch, generation: int) -> None:
        for tp, recs in batch.items():
            nxt = recs[-1].offset + 1
            self._read_offset[tp] = nxt
            self._processed[tp] = (generation, nxt)
            self._n_processed += len(recs)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp in list(self._processed):
            if topics is None or tp in topics or tp.topic in topics:
                yield tp

    def _new_offset(self, tp: TP) -> int | None:
        processed = self._processed.get(tp)
        if processed is not None:
            generation, offset = processed
            if generation == self.app.consumer_generation_id:
                return offset
            del self._processed[tp]
            return None
        return super()._new_offset(tp)

    async def wait_empty(self) -> None:
        """Finish the running batch and every pending write, then commit.

        faust awaits this before it gives partitions away and before it stops.
        """
        in_flight = self._in_flight
        if in_flight is not None:
            await asyncio.wait([in_flight])
        await self._settle(keep=0)
        await self.commit_and_end_transactions()


def _joined(first: RecordBatch, then: RecordBatch) -> dict[TP, Sequence[Any]]:
    """The records of two fetches, per partition in offset order (of the second, only
    records past the first's last: a fetch never goes back within a generation)."""
    joined = dict(first)
    for tp, recs in then.items():
        before = joined.get(tp)
        if not before:
            joined[tp] = recs
            continue
        last = before[-1].offset
        if recs and recs[0].offset <= last:
            recs = [r for r in recs if r.offset > last]
        joined[tp] = [*before, *recs]
    return joined


def left_to_read(consumer: Any, batch: RecordBatch) -> dict[TP, int]:
    """Records after the last one of each partition of the batch, as far as the consumer
    knows (partitions with no highwater yet, or no longer assigned, are left out)."""
    left: dict[TP, int] = {}
    for tp, recs in batch.items():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not assigned any more, or no fetch response yet
            continue
        if highwater is not None:
            left[tp] = max(0, highwater - recs[-1].offset - 1)
    return left


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


#: seconds a replaced producer may take to stop
RENEW_STOP_S = 10.0


class IdempotentProducer(faust_aiokafka.Producer):
    """faust's producer, idempotent whenever it waits for every in-sync replica.

    With acks=all a send retried after a lost ack (a broker killed mid-write) would
    otherwise be written twice; idempotence has the broker drop the copy
    (tests/test_app.py::test_the_producer_is_idempotent_with_acks_all;
    tests/integration/test_broker_kill.py).
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = super()._settings_extra()
        if self.acks in (-1, "all"):
            return {**extra, "acks": "all", "enable_idempotence": True}
        return extra

    async def renew(self) -> None:
        """Send through a new aiokafka producer (a new producer id) from now on.

        An idempotent producer whose sequence the broker no longer follows (a send that
        timed out while the broker was away, then OutOfOrderSequenceNumber for every
        retry) never recovers: aiokafka does not reset it
        (tests/integration/test_outages.py). The old one is stopped aside: its pending
        sends fail, and their batch is sent again (streams/worker/changelog.py)."""
        old, self._producer = self._producer, self._new_producer()
        await self._producer.start()
        if old is not None:
            task = asyncio.ensure_future(asyncio.wait_for(old.stop(), RENEW_STOP_S))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    @cached_property
    def _stopping(self) -> set[asyncio.Future[None]]:
        return set()


class BatchTransport(faust_aiokafka.Transport):
    """aiokafka transport with batch delivery for `BatchTopic` channels, and an idempotent
    producer."""

    Consumer = BatchConsumer
    Conductor = BatchConductor
    Producer = IdempotentProducer
