"""The worker's own figures, published to Redis for the API's /metrics.

Workers serve no metrics over HTTP (only their health probes, health_server.py); each
one writes a snapshot of its counters, consumer lag and event-to-Redis latency histogram
to the hash `rf:metrics:workers` (one field per worker) every few seconds, and any API
process renders all of them in Prometheus text.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import redis.asyncio as aioredis

from streams.core.dedup import DedupCut

log = logging.getLogger(__name__)

#: upper bounds (ms) of the latency histogram, from production (record time) to Redis
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
#: every n-th record of a batch is timed (the histogram is a sample, its sum is not)
SAMPLE_EVERY = 16


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerMetrics:
    worker: str = field(default_factory=worker_id)
    batches: int = 0
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    decayed: int = 0
    #: dedup windows cut short by RANKFLOW_DEDUP_MAX_IDS (episodes), and the ids cut
    dedup_window_cuts: int = 0
    dedup_ids_cut: int = 0
    #: topic:partition -> messages not yet processed after the last batch
    lag: dict[str, int] = field(default_factory=dict)
    latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0

    def observe_latency(self, produced_ms: Iterable[int], done_ms: int) -> None:
        for ts in produced_ms:
            latency = max(0, done_ms - ts)
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency)] += 1
            self.latency_sum_ms += latency

    def snapshot(self) -> bytes:
        return orjson.dumps({
            "worker": self.worker, "at": int(time.time() * 1000), "batches": self.batches,
            "records": self.records, "events": self.events,
            "dead_letters": self.dead_letters, "decayed": self.decayed,
            "dedup_window_cuts": self.dedup_window_cuts, "dedup_ids_cut": self.dedup_ids_cut,
            "lag": sum(self.lag.values()), "latency_buckets_ms": LATENCY_BUCKETS_MS,
            "latency_counts": self.latency_counts, "latency_sum_ms": self.latency_sum_ms,
        })


class DedupCutWatch:
    """Counts the ids the dedup cap forgot early; logs once per cut episode."""

    def __init__(self, metrics: WorkerMetrics, max_ids: int) -> None:
        self.metrics = metrics
        self.max_ids = max_ids

    def observe(self, partition: int, cut: DedupCut) -> None:
        self.metrics.dedup_ids_cut += cut.ids
        if cut.new_episode:
            self.metrics.dedup_window_cuts += 1
            log.warning("partition %d: the dedup window holds only %.0f s of event ids "
                        "(RANKFLOW_DEDUP_MAX_IDS=%d reached; duplicates older than that "
                        "count again until the rate falls)", partition,
                        cut.window_ms / 1000, self.max_ids)


#: topic partition -> records after the last one of the batch (streams.kafka.transport)
LeftToRead = Callable[[Any], Mapping[Any, int]]
#: writes one worker's snapshot (worker id, JSON) where the API reads it
Publish = Callable[[str, bytes], Awaitable[object]]


class MetricsReporter:
    """Counts each batch, logs throughput now and then, publishes the snapshot."""

    def __init__(self, metrics: WorkerMetrics, left_to_read: LeftToRead, publish: Publish,
                 accounts: Sized, every: float = 10.0) -> None:
        self.metrics = metrics
        self.left_to_read = left_to_read
        self.publish_snapshot = publish
        self.accounts = accounts
        self.every = every
        self._reported = _Reported(time.monotonic(), 0, 0, 0)

    def count(self, batch: Mapping[Any, Sequence[Any]], counted: int, dead_lettered: int) -> None:
        """One applied batch: its records, events, dead letters and the lag after it."""
        metrics = self.metrics
        metrics.batches += 1
        metrics.events += counted
        metrics.dead_letters += dead_lettered
        metrics.records += sum(len(records) for records in batch.values())
        for tp, left in self.left_to_read(batch).items():
            metrics.lag[f"{tp.topic}:{tp.partition}"] = left
        self._log_throughput()

    def _log_throughput(self) -> None:
        """Events/s, batches, records per batch: at most every `every` seconds."""
        last = self._reported
        now = time.monotonic()
        if now - last.at < self.every:
            return
        m = self.metrics
        n_batches = m.batches - last.batches
        log.info("%.0f events/s counted, %d batches of %.0f records on average, %d accounts, "
                 "%d re-scored by decay, lag %d", (m.events - last.events) / (now - last.at),
                 n_batches, (m.records - last.records) / max(1, n_batches),
                 len(self.accounts), m.decayed, sum(m.lag.values()))
        self._reported = _Reported(now, m.events, m.batches, m.records)

    async def publish(self, *_: object) -> None:
        try:
            await self.publish_snapshot(self.metrics.worker, self.metrics.snapshot())
        except aioredis.RedisError as exc:
            log.warning("could not publish metrics: %s", exc)


class _Reported(NamedTuple):
    """The figures at the last throughput log line."""

    at: float
    events: int
    batches: int
    records: int
