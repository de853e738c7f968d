"""Bytes of state per account, with every window on, for many simulated accounts.

    .venv/bin/python bench/state_size.py --accounts 100000 --events 2000000

Runs the simulated events (spread over `--days`, in event-clock order) through the
aggregation core, no broker needed, then reports per account: the changelog record
size (what is stored and replicated) and the in-memory size of its Python objects.
Writes bench/results-state.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from array import array
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from typing import Any

from tqdm import tqdm

from streams.core.aggregate import BatchAggregator, PartitionRuntime, new_runtime
from streams.core.dedup import RecentEventIds
from streams.core.ingest import partition_for
from streams.core.state import AccountState
from streams.core.topics import Topics
from streams.core.windows import RECORD, Windows
from streams.dev.simulate import SimulatedPlatform

HERE = Path(__file__).resolve().parent
DAY = 86_400_000


class Record:
    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, timestamp: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp, self.headers = key, value, timestamp, ()


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """sys.getsizeof over containers and slotted objects, each object once."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, array):
        pass  # getsizeof counts an array's buffer
    elif isinstance(obj, list | tuple | set):
        size += sum(deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(deep_size(getattr(obj, s), seen) for s in obj.__slots__
                    if hasattr(obj, s))
    return size


def batches(platform: SimulatedPlatform, n: int, size: int, partitions: int,
            topics: Topics) -> Iterable[tuple[dict[tuple[str, int], list[Record]], int]]:
    """Profiles, then the events, in batches as Kafka would deliver them."""
    offsets: dict[tuple[str, int], int] = {}
    batch: dict[tuple[str, int], list[Record]] = {}
    clock = 0
    for i, message in enumerate(chain(platform.profiles(), platform.events(n)), 1):
        assert message.key is not None
        topic = topics.accounts if message.kind == "accounts" else \
            topics.event(message.kind)  # type: ignore[arg-type]
        tp = (topic, partition_for(message.key.decode(), partitions))
        offset = offsets.get(tp, 0)
        offsets[tp] = offset + 1
        ts = platform.start_ms + int(max(0, i - 1 - platform.accounts) * platform.step_ms)
        batch.setdefault(tp, []).append(Record(topic, tp[1], offset, message.key,
                                               message.value, ts))
        if i % size == 0:
            yield batch, clock
            batch, clock = {}, ts
    if batch:
        yield batch, clock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results-state.json")
    args = parser.parse_args()

    topics = Topics()
    windows = Windows()
    accounts: dict[str, AccountState] = {}
    runtimes: dict[int, PartitionRuntime] = {
        p: new_runtime(p, RecentEventIds()) for p in range(args.partitions)}
    aggregator = BatchAggregator(topics, windows, args.partitions, accounts, runtimes)
    start = int(time.time() * 1000) - int(args.days * DAY)
    platform = SimulatedPlatform(seed=1, accounts=args.accounts, start_ms=start,
                                 step_ms=args.days * DAY / args.events, unkeyed_share=0.0)
    clock = start
    with tqdm(total=args.events + args.accounts, unit="msg") as bar:
        for batch, _ in batches(platform, args.events, 20_000, args.partitions, topics):
            aggregator.process(batch, clock)
            clock = max(r.progress.clock for r in runtimes.values())
            bar.update(sum(len(b) for b in batch.values()))
    for state in accounts.values():
        state.prune(clock)
    records = [len(state.encode()) for state in accounts.values()]
    memory = [deep_size(state) for state in accounts.values()]
    buckets = [len(s.counts.data) // RECORD for s in accounts.values()]
    results = {
        "accounts_simulated": args.accounts,
        "accounts_with_state": len(accounts),
        "events": args.events,
        "days": args.days,
        "record_bytes_mean": round(statistics.mean(records), 1),
        "record_bytes_p99": sorted(records)[int(len(records) * 0.99)],
        "record_bytes_max": max(records),
        "memory_bytes_mean": round(statistics.mean(memory), 1),
        "memory_bytes_p99": sorted(memory)[int(len(memory) * 0.99)],
        "buckets_mean": round(statistics.mean(buckets), 1),
        "buckets_max": max(buckets),
    }
    print(json.dumps(results, indent=2))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
