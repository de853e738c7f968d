"""`rankflow rebuild`: rewrite the whole Redis layout from the processors' state.

For when Redis lost its data. Reads both state changelogs from the beginning
(streams/kafka/changelogs.py), restores every partition's runtime as a worker would, and
rewrites the layout through the worker's own rewrite path (streams/sink/rewrite.py), as
absolute values: safe while workers run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from tqdm import tqdm

from streams.core.aggregate import PartitionRuntime, restore_runtime
from streams.core.dedup import RecentEventIds
from streams.core.scoring import scoring_config
from streams.core.series import ChunkRecord, chunk_supersedes, decode_partition_record
from streams.core.state import accounts_of, supersedes
from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE, Topics
from streams.core.updates import BoardUpdate, BoardUpdates, in_chunks
from streams.core.windows import Windows
from streams.kafka.changelogs import read_latest
from streams.ops.connections import redis_client
from streams.ops.settings import Settings
from streams.sink.cluster import board_writer
from streams.sink.keys import RedisKeys
from streams.sink.rewrite import LayoutRewriter

log = logging.getLogger(__name__)
#: accounts per Redis write
CHUNK = 5_000


@dataclass(frozen=True)
class RebuildReport:
    accounts: int
    partitions: int
    events: int
    seconds: float


def changelog(settings: Settings, table: str) -> str:
    return Topics(settings.topic_prefix, settings.app_id).changelog(table)


async def rebuild(settings: Settings, clear: bool = False,
                  progress: bool = True) -> RebuildReport:
    """Restore state from the changelogs, then rewrite every partition's layout."""
    started = time.monotonic()
    windows = Windows(settings.named_periods)
    accounts = accounts_of({key.decode(): value for key, value in (await read_latest(
        settings, changelog(settings, ACCOUNT_TABLE), progress, supersedes)).items()})
    records = [decode_partition_record(v) for v in (await read_latest(
        settings, changelog(settings, PARTITION_TABLE), progress,
        chunk_supersedes)).values()]
    chunks = [r for r in records if isinstance(r, ChunkRecord)]
    segments = [r for r in records if not isinstance(r, ChunkRecord)]
    partitions = sorted({s.partition for s in accounts.values()} | {p for p, _, _ in segments}
                        | {c.partition for c in chunks})
    progress_clock = max((h.clock for _, _, h in segments if h is not None), default=0)
    clock = progress_clock if settings.clock == "event" else int(time.time() * 1000)
    runtimes: dict[int, PartitionRuntime] = {
        p: restore_runtime(p, RecentEventIds(), [(s, h) for q, s, h in segments if q == p],
                           [a for a in accounts.values() if a.partition == p], windows, clock,
                           [c for c in chunks if c.partition == p])
        for p in partitions
    }
    client = redis_client(settings)
    if clear:
        async for key in client.scan_iter(f"{settings.prefix}*", count=10_000):
            await client.delete(key)
    writer = board_writer(client, RedisKeys(settings.prefix), windows)
    with tqdm(total=len(accounts), unit="account", disable=not progress,
              desc="redis") as bar:

        async def submit(update: BoardUpdate) -> None:
            for part in in_chunks(update, CHUNK):
                await writer.write(part)
            bar.update(len(update.views))

        rewriter = LayoutRewriter(accounts, runtimes,
                                  BoardUpdates(windows, scoring_config(settings), runtimes),
                                  lambda: clock, submit, asyncio.Lock(), CHUNK)
        await rewriter.rewrite("rankflow rebuild")
    await client.aclose()
    report = RebuildReport(len(accounts), len(partitions),
                           sum(r.progress.events for r in runtimes.values()),
                           time.monotonic() - started)
    log.info("rebuilt Redis from state: %d accounts over %d partitions in %.1fs",
             report.accounts, report.partitions, report.seconds)
    return report
