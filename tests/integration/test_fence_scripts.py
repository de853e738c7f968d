"""The owner check inside the write scripts (streams/sink/lua/fence.lua), on the real Redis:
a write older than a partition's owner changes nothing of that partition, and nothing
else is held back with it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import redis.asyncio as aioredis

from streams.core.scoring import AccountView, WindowScore
from streams.core.updates import BoardUpdate, in_chunks
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys
from streams.sink.writer import RedisBoardWriter


def _view(account_id: str, partition: int, views: int) -> AccountView:
    scores = {w: WindowScore(views, 0, 0, float(views)) for w in Windows().ids}
    return AccountView(account_id, partition, True, "police", None, 0, scores, {})


def _update(views: list[AccountView], fences: dict[int, tuple[int, int]]) -> BoardUpdate:
    counters = {v.partition: (v.windows["all"].views, 0) for v in views}
    return BoardUpdate(views, set(), {}, counters, 1, 1, fences)


@asynccontextmanager
async def _writer(url: str) -> AsyncIterator[tuple[aioredis.Redis, RedisKeys, RedisBoardWriter]]:
    """A writer on a prefix of its own, whose keys are deleted afterwards."""
    keys = RedisKeys(f"fence{uuid.uuid4().hex[:8]}:")
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        yield client, keys, RedisBoardWriter(client, keys, Windows())
    finally:
        names = [k async for k in client.scan_iter(f"{keys.prefix}*")]
        if names:
            await client.delete(*names)
        await client.aclose()


def test_a_write_older_than_the_partitions_owner_is_refused_and_others_apply(stack):
    async def main() -> None:
        async with _writer(stack.redis) as (client, keys, writer):
            board = keys.board("all", "all")
            await writer.write(_update([_view("a", 0, 5), _view("b", 1, 7)],
                                       {0: (4, 1), 1: (4, 1)}))
            await writer.claim({0: (5, 2)})  # another worker took partition 0 over
            # the stalled worker's write in hand: partition 0 refused, 1 still its own
            await writer.write(_update([_view("a", 0, 99), _view("b", 1, 8)],
                                       {0: (4, 2), 1: (4, 2)}))
            assert await client.zscore(board, "a") == 5.0
            assert await client.hget(keys.account("a"), "all.views") == "5"
            assert await client.hget(keys.meta_parts, "0|events") == "5"
            assert await client.zscore(board, "b") == 8.0
            # the new owner writes; a rebuild's unstamped write is not checked
            await writer.write(_update([_view("a", 0, 6)], {0: (5, 3)}))
            assert await client.zscore(board, "a") == 6.0
            await writer.write(_update([_view("a", 0, 9)], {}))
            assert await client.zscore(board, "a") == 9.0
            owners = await client.hgetall(keys.owners)
            assert owners == {"0.epoch": "5", "0.seq": "3", "1.epoch": "4", "1.seq": "2"}
            assert await client.hget(keys.meta, "events") == "17"  # 9 + 8

    asyncio.run(main())


def test_a_write_after_redis_lost_writes_reports_the_partition_behind(stack):
    async def main() -> None:
        async with _writer(stack.redis) as (client, keys, writer):
            assert await writer.write(_update([_view("a", 0, 5)], {0: (4, 1)})) == []
            assert await writer.write(_update([_view("a", 0, 6)], {0: (4, 2)}),
                                      after={0: (4, 1)}) == []
            await client.hset(keys.owners, "0.seq", 1)  # an older copy: write 2 lost
            behind = await writer.write(_update([_view("a", 0, 7), _view("b", 1, 1)],
                                                {0: (4, 3), 1: (4, 1)}),
                                        after={0: (4, 2)})
            assert behind == [0]
            assert await client.hget(keys.owners, "0.seq") == "3"  # still written

    asyncio.run(main())


def test_only_an_updates_last_chunk_marks_it_done_in_its_generation_unless_refused(stack):
    async def main() -> None:
        async with _writer(stack.redis) as (client, keys, writer):
            token = await writer.claim_generation()
            views = [_view("a", 0, 5), _view("b", 1, 7)]
            first, last = in_chunks(replace(_update(views, {0: (4, 1), 1: (4, 1)}),
                                            done={0: 1_000, 1: 1_000}), 1)
            await writer.write(first, generation=token)
            assert await writer.done([0, 1]) == {}, "the update is not whole yet"
            await writer.write(last, generation=token)
            assert await writer.done([0, 1]) == {0: (4, 1, 1_000), 1: (4, 1, 1_000)}
            await writer.claim({0: (5, 2)})  # another worker took partition 0 over
            assert await writer.done([0]) == {0: (4, 1, 1_000)}, "a claim keeps the mark"
            stale = replace(_update(views, {0: (4, 2), 1: (4, 2)}), done={0: 2_000, 1: 2_000})
            await writer.write(stale, generation=token)
            assert await writer.done([0, 1, 2]) == {0: (4, 1, 1_000), 1: (4, 2, 2_000)}
            # the data flushed (its marker gone): a write before the worker noticed marks
            # nothing, and neither does one for another generation
            await client.delete(keys.generation, keys.owners)
            again = replace(_update(views[1:], {1: (4, 3)}), done={1: 3_000})
            await writer.write(again, generation=token)
            assert await writer.done([1]) == {}
            await writer.claim_generation()
            await writer.write(replace(again, fences={1: (4, 4)}), generation=token)
            assert await writer.done([1]) == {}

    asyncio.run(main())
