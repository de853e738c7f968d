"""The worker, composed: every piece built from settings in one place and hooked to faust.

The pieces, each with one job (and its unit tests in tests/test_worker_*.py):

* `BatchStep` (batch_step.py): applies a batch, queues its writes in order (order.py);
* `PartitionOwnership` (ownership.py): which partitions are applied, and their restore;
* `ChangelogWriter` (changelog.py): state records, sends with timeout and retries;
* `DecayTimer` (decay.py): re-scores accounts whose buckets left a window;
* `PartitionFence` (fence.py): owner stamps on every write, and stalls noticed;
* `RedisWrites` and `RedisWatch` (redis_watch.py): writes, and healing a Redis that
  lost its data, through the one rewrite path (`LayoutRewriter`, streams/sink/rewrite.py);
* `MetricsReporter` (metrics.py): counts, logs and publishes the worker's figures;
* `Readiness` and `Liveness` (health.py), fed by the retry policy (retry.py) and served
  by `HealthServer` (health_server.py) when `RANKFLOW_HEALTH_PORT` is set.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import faust
import redis.asyncio as aioredis

from streams.core.aggregate import BatchAggregator, PartitionRuntime
from streams.core.dedup import RecentEventIds
from streams.core.scoring import scoring_config
from streams.core.updates import BoardUpdate, BoardUpdates
from streams.core.windows import Windows
from streams.kafka.app import Wiring
from streams.kafka.recovered import tables_recovered
from streams.kafka.transport import BatchConductor, left_to_read
from streams.kafka.written import OwnRecordsRead
from streams.ops.settings import Settings
from streams.sink.cluster import board_writer
from streams.sink.keys import RedisKeys
from streams.sink.rewrite import LayoutRewriter
from streams.worker.batch_step import BatchStep
from streams.worker.changelog import ChangelogWriter
from streams.worker.clock import WorkerClock
from streams.worker.decay import DecayTimer
from streams.worker.fence import PartitionFence
from streams.worker.health import Liveness, Readiness
from streams.worker.health_server import HealthServer
from streams.worker.metrics import DedupCutWatch, MetricsReporter, WorkerMetrics
from streams.worker.order import WriteOrder
from streams.worker.ownership import PartitionOwnership
from streams.worker.redis_watch import RedisWatch, RedisWrites

log = logging.getLogger(__name__)

#: seconds between two publications of the worker's metrics
METRICS_INTERVAL = 5.0
#: seconds between decay ticks under the wall clock (boards decay within about this)
DECAY_INTERVAL = 1.0
#: seconds between two checks that Redis still holds its data (the generation marker)
REDIS_CHECK_INTERVAL = 1.0
#: accounts per write when the whole layout is rewritten (processing goes on in between)
REWRITE_CHUNK = 2_000
#: allocations between two collections of the young generation (Python's default: 700)
GC_YOUNG_THRESHOLD = 50_000


@dataclass(frozen=True)
class Worker:
    """The composed pieces of one worker."""

    step: BatchStep
    ownership: PartitionOwnership
    decay: DecayTimer
    watch: RedisWatch
    rewriter: LayoutRewriter
    reporter: MetricsReporter
    fence: PartitionFence
    readiness: Readiness
    liveness: Liveness
    #: the health endpoint, when RANKFLOW_HEALTH_PORT is set (started beside the app)
    health_server: HealthServer | None
    event_clock: bool


class _Partition(NamedTuple):
    """A source partition by number, as `PartitionOwnership.ready` asks about it."""

    partition: int


def compose_worker(wiring: Wiring, settings: Settings, redis: aioredis.Redis) -> Worker:
    """Build every piece of the worker for these settings (nothing runs yet)."""
    app = wiring.app
    windows = Windows(settings.named_periods)
    runtimes: dict[int, PartitionRuntime] = {}
    accounts: Any = wiring.accounts.data
    segments: Any = wiring.partitions.data
    event_clock = settings.clock == "event"
    clock = WorkerClock(event_clock, runtimes)
    lock = asyncio.Lock()
    order = WriteOrder()
    metrics = WorkerMetrics()
    fence = PartitionFence(lambda: app.consumer_generation_id, settings.session_timeout)
    updates = BoardUpdates(windows, scoring_config(settings), runtimes, fence.stamp)
    layout_writer = board_writer(redis, RedisKeys(settings.prefix), windows)
    liveness = Liveness(settings.unhealthy_after)
    redis_writes = RedisWrites(layout_writer, fence, liveness)

    def submit(update: BoardUpdate) -> asyncio.Future[None]:
        return order.then(redis_writes.write(update))

    def claim(partitions: set[int]) -> asyncio.Future[None]:
        return order.then(redis_writes.claim(fence.stamp(sorted(partitions))))

    rewriter = LayoutRewriter(accounts, runtimes, updates, clock, submit, lock, REWRITE_CHUNK,
                              redis_writes.done_marks, fence.generation)
    changelog_topics = [table.changelog_topic.get_topic_name()
                        for table in (wiring.accounts, wiring.partitions)]

    def recovered(partition: int) -> bool:
        return tables_recovered(app.tables.recovery,  # type: ignore[attr-defined]
                                changelog_topics, partition)

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment()
                if tp.topic in _conductor(app).batch_topics}

    accounts_topic, partitions_topic = changelog_topics
    changelog = ChangelogWriter(app.producer.send, accounts_topic, partitions_topic, segments,
                                runtimes, liveness,
                                DedupCutWatch(metrics, settings.dedup_max_ids).observe,
                                lambda: app.consumer_generation_id,
                                getattr(app.producer, "renew", None),
                                OwnRecordsRead(lambda: app.tables.recovery,  # type: ignore[attr-defined]
                                               runtimes.get).acked)

    def heal(partitions: set[int]) -> asyncio.Future[None] | None:
        states = wiring.accounts.take_overtaken(partitions)
        chunks = wiring.partitions.take_overtaken(partitions)
        if not (states or chunks):
            return None
        log.warning("partitions %s: the newest changelog records of %d accounts and %d "
                    "series chunks are behind their state (a stalled worker's late "
                    "writes): writing them again", sorted(partitions), len(states),
                    len(chunks))
        records = [*changelog.account_records(states, clock()),
                   *changelog.chunk_records(chunks)]
        tenure = changelog.tenure(partitions)

        async def write() -> None:
            if fence.may_write():
                await changelog.persist([], records, tenure)

        return order.then(write())

    ownership = PartitionOwnership(
        runtimes, accounts, segments, windows,
        lambda: RecentEventIds(settings.dedup_min_events,
                               int(settings.dedup_min_seconds * 1000), settings.dedup_max_ids),
        clock, recovered, assigned, rewriter.restored, claim, heal, lock,
        lambda p: (wiring.accounts.changed[p], wiring.partitions.changed[p]))
    decay = DecayTimer(runtimes, accounts, updates, clock, submit, lock, metrics)
    reporter = MetricsReporter(
        metrics, lambda batch: left_to_read(app.consumer, batch),
        lambda worker, snapshot: redis.hset(layout_writer.keys.worker_metrics, worker,
                                            snapshot),
        accounts)
    aggregator = BatchAggregator(wiring.topics, windows, settings.partitions, accounts,
                                 runtimes)
    step = BatchStep(ownership, aggregator, decay, changelog, updates, redis_writes.write,
                     order, reporter, clock, lock, fence)
    watch = RedisWatch(redis_writes, rewriter.rewrite, lambda: list(runtimes))
    readiness = Readiness(assigned, lambda p: ownership.ready(_Partition(p)))
    server = None
    if settings.health_port:
        server = HealthServer(settings.health_host, settings.health_port,
                              {"/ready": readiness.probe, "/live": liveness.probe})
    return Worker(step, ownership, decay, watch, rewriter, reporter, fence, readiness,
                  liveness, server, event_clock)


def install(worker: Worker, app: faust.App) -> None:
    """Hook the worker to faust: the conductor's batch handler, the rebalance signals,
    the decay, metrics and Redis-watch timers; and tune the garbage collector."""
    # A batch allocates about ten objects per record and frees them by reference
    # counting; the default thresholds would walk the young objects every few dozen
    # records (a third of the worker's CPU in profiles: docs/performance.md).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
    conductor = _conductor(app)
    conductor.batch_handler = worker.step
    conductor.batch_ready = worker.ownership.ready
    app.on_partitions_revoked.connect(worker.ownership.forget)  # type: ignore[arg-type]
    app.on_rebalance_complete.connect(worker.ownership.on_recovery)
    app.on_rebalance_complete.connect(worker.readiness.assignment_done)
    if not worker.event_clock:
        app.timer(interval=DECAY_INTERVAL)(worker.decay.tick)
    app.timer(interval=METRICS_INTERVAL)(worker.reporter.publish)
    app.timer(interval=REDIS_CHECK_INTERVAL)(worker.watch.check)
    worker.fence.start()


def _conductor(app: faust.App) -> BatchConductor:
    conductor = app.topics
    assert isinstance(conductor, BatchConductor)
    return conductor
