"""The worker's own figures, published to Redis for the API's /metrics.

Workers do not serve HTTP; each one writes a snapshot of its counters, consumer lag and
event-to-Redis latency histogram to the hash `rf:metrics:workers` (one field per worker)
every few seconds, and any API process renders all of them in Prometheus text.
"""

from __future__ import annotations

import bisect
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

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
            "lag": sum(self.lag.values()), "latency_buckets_ms": LATENCY_BUCKETS_MS,
            "latency_counts": self.latency_counts, "latency_sum_ms": self.latency_sum_ms,
        })
