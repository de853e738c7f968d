"""Plain records and a runner for the aggregation core, without a broker."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from streams.core.aggregate import BatchAggregator, PartitionRuntime, new_runtime
from streams.core.dedup import RecentEventIds
from streams.core.ingest import partition_for
from streams.core.periods import parse_periods
from streams.core.state import AccountState
from streams.core.topics import Topics
from streams.core.windows import Windows

TOPICS = Topics()
NOW = 1_700_000_000_000


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = NOW
    headers: list = field(default_factory=list)


def ev(account_id, kind="view", event_id=None, ts=NOW - 1000, **extra):
    body = {"event_id": event_id or f"{account_id}-{kind}-{ts}-{extra}", "account_id": account_id,
            "ts": ts, **extra}
    return orjson.dumps(body)


class Log:
    """An append-only partitioned log per topic, like Kafka's, for feeding the core."""

    def __init__(self, partitions=4):
        self.partitions = partitions
        self.records: dict[tuple[str, int], list[Record]] = {}

    def append(self, topic, key, value, partition=None, headers=None, timestamp=NOW):
        if partition is None:
            partition = partition_for(key.decode(), self.partitions) if key else 0
        log = self.records.setdefault((topic, partition), [])
        record = Record(topic, partition, len(log), key, value, timestamp, headers or [])
        log.append(record)
        return record

    def event(self, account_id, kind="view", key=..., timestamp=NOW, **fields):
        key = account_id.encode() if key is ... else key
        return self.append(TOPICS.event(kind), key, ev(account_id, kind, **fields),
                           timestamp=timestamp)

    def profile(self, account_id, category="police", fans=0, name=None):
        value = orjson.dumps({"account_id": account_id, "name": name or account_id,
                              "category": category, "fans": fans})
        return self.append(TOPICS.accounts, account_id.encode(), value)


class Core:
    """A BatchAggregator over in-memory state, fed from a Log."""

    def __init__(self, partitions=4, periods=""):
        self.accounts: dict[str, AccountState] = {}
        self.runtimes: dict[int, PartitionRuntime] = {
            p: new_runtime(p, RecentEventIds()) for p in range(partitions)}
        self.windows = Windows(parse_periods(periods))
        self.aggregator = BatchAggregator(TOPICS, self.windows, partitions, self.accounts,
                                          self.runtimes)
        self.read: dict[tuple[str, int], int] = {}

    def feed(self, log: Log, clock: int = NOW):
        """Process everything not read yet, as one batch."""
        batch = {}
        for tp, records in log.records.items():
            start = self.read.get(tp, 0)
            if records[start:]:
                batch[tp] = records[start:]
                self.read[tp] = len(records)
        return self.aggregator.process(batch, clock)

    def replay(self, log: Log, tp, start):
        """Re-deliver a tp from an earlier offset, as after a crash."""
        return self.aggregator.process({tp: log.records[tp][start:]}, NOW)

    def metrics(self, account_id, window="all", clock=NOW):
        return self.accounts[account_id].counts.sums(window, clock)[:3]
