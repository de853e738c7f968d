"""The Redis Cluster writer (streams/sink/cluster.py) on the dev stack's cluster: a batch
over many slots is written key by key, the owner check holds in every slot after a claim,
and a shard that lost writes is reported behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio.cluster as aiocluster

from streams.core.scoring import AccountView, WindowScore
from streams.core.updates import BoardUpdate
from streams.core.windows import Windows
from streams.ops.settings import Settings
from streams.sink.cluster import ClusterBoardWriter, shard_slots
from streams.sink.keys import RedisKeys, SlotKeys


def _view(account_id: str, partition: int, views: int) -> AccountView:
    scores = {w: WindowScore(views, 0, 0, float(views)) for w in Windows().ids}
    return AccountView(account_id, partition, True, "police", f"n{account_id}", 0, scores, {})


def _update(views: list[AccountView], fences: dict[int, tuple[int, int]]) -> BoardUpdate:
    counters: dict[int, tuple[int, int]] = {}
    for v in views:
        counters[v.partition] = (counters.get(v.partition, (0, 0))[0]
                                 + v.windows["all"].views, 0)
    return BoardUpdate(views, set(), {}, counters, 1, 1, fences)


@asynccontextmanager
async def _writer(settings: Settings
                  ) -> AsyncIterator[tuple[aiocluster.RedisCluster, RedisKeys,
                                           ClusterBoardWriter]]:
    """A cluster writer on a prefix of its own, whose keys are deleted afterwards."""
    keys = RedisKeys(f"cl{uuid.uuid4().hex[:8]}:")
    client = aiocluster.RedisCluster.from_url(settings.redis, decode_responses=True)
    try:
        yield client, keys, ClusterBoardWriter(client, keys, Windows())  # type: ignore[arg-type]
    finally:
        async for key in client.scan_iter(f"{keys.prefix}*", count=10_000):
            await client.delete(key)
        await client.aclose()


def test_a_batch_over_many_slots_lands_key_by_key(redis_cluster):
    async def main() -> None:
        async with _writer(redis_cluster) as (client, keys, writer):
            views = [_view(f"acct{i}", i % 4, i + 1) for i in range(300)]
            fences = {p: (3, 1) for p in range(4)}
            await writer.claim(fences)
            assert await writer.write(_update(views, {p: (3, 2) for p in range(4)}),
                                      after=fences) == []
            for v in views:
                assert await client.zscore(keys.board("24h", "all"), v.account_id) == \
                    v.windows["24h"].index
                assert await client.hget(keys.account(v.account_id), "all.views") == \
                    str(v.windows["all"].views)
            assert await client.zcard(keys.board("7d", "cat:police")) == 300
            assert await client.hget(keys.meta, "events") == str(sum(range(1, 301)))
            assert await writer.written([0, 1, 2, 3]) == {p: (3, 2) for p in range(4)}
            # nodes without the scripts (a replica promoted since) get them again
            await client.script_flush()
            await writer.write(_update(views[:3], {p: (3, 3) for p in range(4)}))
            assert await writer.written([0]) == {0: (3, 3)}

    asyncio.run(main())


def test_a_claimed_partition_refuses_the_old_owner_in_every_slot(redis_cluster):
    async def main() -> None:
        async with _writer(redis_cluster) as (client, keys, writer):
            board = keys.board("all", "all")
            await writer.write(_update([_view(f"a{i}", 0, 5) for i in range(50)]
                                       + [_view("b", 1, 7)], {0: (4, 1), 1: (4, 1)}))
            await writer.claim({0: (5, 2)})  # another worker took partition 0 over
            refused = await writer.write(_update([_view(f"a{i}", 0, 99) for i in range(50)]
                                                 + [_view("b", 1, 8)],
                                                 {0: (4, 2), 1: (4, 2)}))
            assert refused == []  # refused, not behind
            scores = {await client.zscore(board, f"a{i}") for i in range(50)}
            assert scores == {5.0}
            assert await client.zscore(board, "b") == 8.0
            # partition 0 keeps its share of before (50 * 5), 1 has its new one (8)
            assert await client.hget(keys.meta, "events") == "258"
            await writer.write(_update([_view("a0", 0, 6)], {0: (5, 3)}))
            assert await client.zscore(board, "a0") == 6.0

    asyncio.run(main())


def test_a_shard_that_lost_writes_reports_the_partition_behind(redis_cluster):
    async def main() -> None:
        async with _writer(redis_cluster) as (client, keys, writer):
            assert await writer.write(_update([_view("a", 0, 5)], {0: (4, 1)})) == []
            assert await writer.write(_update([_view("a", 0, 6)], {0: (4, 2)}),
                                      after={0: (4, 1)}) == []
            await client.initialize()
            shards = shard_slots(client.nodes_manager.slots_cache)
            assert len(shards) == 3
            # one shard is an older copy of itself: write 2 lost there only
            await client.hset(SlotKeys(keys.prefix).stamps(shards[1]), "0.seq", 1)
            assert await writer.written([0]) == {0: (4, 1)}
            behind = await writer.write(_update([_view("a", 0, 7), _view("b", 1, 1)],
                                                {0: (4, 3), 1: (4, 1)}),
                                        after={0: (4, 2)})
            assert behind == [0]

    asyncio.run(main())


def test_the_api_reads_a_page_and_its_accounts_across_slots(redis_cluster):
    from streams.api.reader import BoardReader

    async def main() -> None:
        async with _writer(redis_cluster) as (client, keys, writer):
            views = [_view(f"acct{i}", i % 4, (i // 2) + 1) for i in range(40)]  # pairs tie
            await writer.write(_update(views, {}))
            reader = BoardReader(client, keys, Windows())  # type: ignore[arg-type]
            assert reader.cluster
            page = await reader.leaderboard("all", "all", 1, 4)
            assert page.total == 40
            assert [(e.rank, e.score, e.views) for e in page.entries] == [
                (1, 20.0, 20), (3, 19.0, 19), (3, 19.0, 19), (5, 18.0, 18)]
            assert all(e.name == f"n{e.account_id}" and e.category == "police"
                       for e in page.entries)
            assert (await reader.leaderboard("all", "none", 0, 5)).entries == []

    asyncio.run(main())
