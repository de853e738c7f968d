"""`rankflow rebuild`: rewrite the whole Redis layout from the processors' state.

For when Redis lost its data. Reads both state changelogs from the beginning (no
consumer group: the workers are not disturbed), keeps the newest record per key, scores
every account at the current clock and writes the layout through the same writer the
workers use, as absolute values — safe while workers run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from streams.core.aggregate import restore_runtime
from streams.core.dedup import RecentEventIds
from streams.core.scoring import account_view, scoring_config
from streams.core.state import AccountState, decode_segment
from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE
from streams.core.windows import Windows
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import Settings
from streams.sink.writer import BoardUpdate, RedisBoardWriter, RedisKeys

log = logging.getLogger(__name__)
#: accounts per Redis pipeline
CHUNK = 5_000


@dataclass(frozen=True)
class RebuildReport:
    accounts: int
    partitions: int
    events: int
    seconds: float


def changelog(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


async def read_latest(settings: Settings, topic: str, progress: bool) -> dict[bytes, bytes]:
    """The newest value of every key of a compacted topic (tombstones drop the key)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                **kafka_client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code") or not described.get("partitions"):
        log.warning("no state topic %s: nothing to rebuild from", topic)
        return {}
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest",
                                **kafka_client_options(settings))
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        with tqdm(total=sum(ends.values()), unit="record", disable=not progress,
                  desc=topic) as bar:
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        if record.key is None:
                            continue
                        if record.value is None:
                            latest.pop(record.key, None)
                        else:
                            latest[record.key] = record.value
                    bar.update(len(records))
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return latest
    finally:
        await consumer.stop()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def rebuild(settings: Settings, clear: bool = False,
                  progress: bool = True) -> RebuildReport:
    started = time.monotonic()
    windows = Windows(settings.named_periods)
    accounts = [AccountState.decode(v) for v in (await read_latest(
        settings, changelog(settings, ACCOUNT_TABLE), progress)).values()]
    segments = [decode_segment(v) for v in (await read_latest(
        settings, changelog(settings, PARTITION_TABLE), progress)).values()]
    partitions = sorted({s.partition for s in accounts} | {p for p, _, _ in segments})
    headers_clock = max((h.clock for _, _, h in segments if h is not None), default=0)
    clock = headers_clock if settings.clock == "event" else int(time.time() * 1000)
    runtimes = {
        p: restore_runtime(p, RecentEventIds(), [(s, h) for q, s, h in segments if q == p],
                           [a for a in accounts if a.partition == p], windows, clock)
        for p in partitions
    }
    client = redis_client(settings)
    keys = RedisKeys(settings.prefix)
    if clear:
        async for key in client.scan_iter(f"{settings.prefix}*", count=10_000):
            await client.delete(key)
    writer = RedisBoardWriter(client, keys, windows)
    scoring = scoring_config(settings)
    now = int(time.time() * 1000)
    for state in accounts:
        state.prune(clock)
    with tqdm(total=len(accounts), unit="account", disable=not progress,
              desc="redis") as bar:
        for chunk in _chunks(accounts, CHUNK):
            views = [account_view(state, windows, clock, scoring) for state in chunk]
            await writer.write(BoardUpdate(views, set(), {}, {}, clock, now))
            bar.update(len(chunk))
    campaigns = {(p, c): totals for p, runtime in runtimes.items()
                 for c, totals in runtime.campaigns.totals.items()}
    counters = {p: (r.progress.events, r.progress.dlq) for p, r in runtimes.items()}
    await writer.write(BoardUpdate([], set(), campaigns, counters, clock, now))
    await client.aclose()
    report = RebuildReport(len(accounts), len(partitions),
                           sum(r.progress.events for r in runtimes.values()),
                           time.monotonic() - started)
    log.info("rebuilt Redis from state: %d accounts over %d partitions in %.1fs",
             report.accounts, report.partitions, report.seconds)
    return report
