"""Hygiene of the Redis layout, on the real Redis: a campaign whose boards are all empty
leaves `rf:campaigns`, and an account's own campaign set follows its campaign boards, in
the script that writes the boards, so a replay of the same writes converges."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from streams.core.scoring import AccountView, WindowScore
from streams.core.updates import BoardUpdate
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys
from streams.sink.writer import RedisBoardWriter

WINDOWS = Windows()


def view(account_id: str, listed: bool, campaign_views: dict[str, int]) -> AccountView:
    scores = {w: WindowScore(1, 0, 0, 1.0) for w in WINDOWS.ids}
    campaigns = {c: {w: [views, 0, 0, 1] for w in WINDOWS.ids}
                 for c, views in campaign_views.items()}
    return AccountView(account_id, 0, listed, "police", "name", 0, scores, campaigns)


def update(*views: AccountView) -> BoardUpdate:
    return BoardUpdate(list(views), set(), {}, {}, 1, 1, {})


def test_a_campaign_leaves_the_registry_when_its_boards_empty_and_replays_converge(stack):
    async def main() -> None:
        keys = RedisKeys(f"hyg{uuid.uuid4().hex[:8]}:")
        client = aioredis.Redis.from_url(stack.redis, decode_responses=True)
        writer = RedisBoardWriter(client, keys, WINDOWS)

        async def registry() -> set[str]:
            return await client.smembers(keys.campaigns)  # type: ignore[no-any-return]

        async def own(account_id: str) -> set[str]:
            return await client.smembers(  # type: ignore[no-any-return]
                keys.account_campaigns(account_id))

        try:
            running = [update(view("a", True, {"spring": 5, "autumn": 2}),
                              view("b", True, {"spring": 1})),
                       update(view("a", True, {"spring": 5, "autumn": 0}))]
            for u in running:
                await writer.write(u)
            assert await registry() == {"spring"}, "autumn's boards are empty"
            assert await own("a") == {"spring"} and await own("b") == {"spring"}
            assert not await client.exists(keys.board("all", "campaign:autumn"))
            # every account of spring deleted (a tombstone takes it off every board)
            ended = [update(view("a", False, {"spring": 5, "autumn": 0}),
                            view("b", False, {"spring": 1}))]
            for u in ended:
                await writer.write(u)
            assert await registry() == set()
            assert await own("a") == set() and await own("b") == set()
            # a replay of every write (a crash, a rebalance) ends the same
            for u in running + ended:
                await writer.write(u)
            assert await registry() == set() and await own("a") == set()
            # a profile again: the account's events still count, spring is back
            await writer.write(update(view("b", True, {"spring": 1})))
            assert await registry() == {"spring"} and await own("b") == {"spring"}
        finally:
            names = [k async for k in client.scan_iter(f"{keys.prefix}*")]
            if names:
                await client.delete(*names)
            await client.aclose()
    asyncio.run(main())
