"""Reads boards, accounts and campaigns from the Redis layout of contract §4 (Redis layout).

Read-only: the API scales apart from the workers and never writes. Ranks are
competition ranks: 1 + the number of members with a strictly greater score. On a Redis
Cluster a page's account hashes lie in other slots than its board, so the page is read in
two pipelined round trips instead of one script (tests/integration/test_redis_cluster.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from streams.api.models import (
    Account,
    Around,
    BoardRank,
    Campaign,
    CampaignSeries,
    CampaignWindow,
    Entry,
    Leaderboard,
    SeriesPoint,
    WindowMetrics,
)
from streams.core.series import SPANS, STEP_INDEX, UNITS
from streams.core.windows import Windows
from streams.ops.connections import is_cluster
from streams.sink.keys import RedisKeys

# KEYS[1]: the board. ARGV: account key prefix, window, offset, limit.
# Returns [total, rank of the first entry, then per entry: member, score, name, category,
# fans, views, likes, uploads] in one round trip (instead of a command per entry).
PAGE = """
local total = redis.call('ZCARD', KEYS[1])
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local members = redis.call('ZREVRANGE', KEYS[1], offset, offset + limit - 1, 'WITHSCORES')
local out = {total, 0}
if #members > 0 then
  out[2] = redis.call('ZCOUNT', KEYS[1], '(' .. members[2], '+inf') + 1
end
local w = ARGV[2]
for i = 1, #members, 2 do
  local row = redis.call('HMGET', ARGV[1] .. members[i], 'name', 'category', 'fans',
                         w .. '.views', w .. '.likes', w .. '.uploads')
  table.insert(out, members[i])
  table.insert(out, members[i + 1])
  for j = 1, 6 do table.insert(out, row[j] or false) end
end
return out
"""
PAGE_WIDTH = 8


def competition_ranks(scores: Sequence[float], first_rank: int, offset: int) -> list[int]:
    """Ranks of a page of descending scores starting at position `offset` of its board.

    `first_rank` is the first entry's rank (it may tie with members above the page).
    Past a drop in score, every member before scores strictly higher: rank = position + 1
    (tests/integration/test_api.py::test_competition_ranks_function).
    """
    ranks: list[int] = []
    for i, score in enumerate(scores):
        if i == 0:
            ranks.append(first_rank)
        elif score == scores[i - 1]:
            ranks.append(ranks[-1])
        else:
            ranks.append(offset + i + 1)
    return ranks


class BoardReader:
    def __init__(self, client: aioredis.Redis, keys: RedisKeys, windows: Windows) -> None:
        self.client = client
        self.keys = keys
        self.windows = windows
        self._page = client.register_script(PAGE)
        self.cluster = is_cluster(client)

    async def _page_by_slot(self, window: str, board: str, offset: int, limit: int
                            ) -> list[Any]:
        """PAGE's answer from single-key commands: the board, then its members' hashes."""
        key = self.keys.board(window, board)
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrange(key, offset, offset + limit - 1, withscores=True)
        total, members = await pipe.execute()
        out: list[Any] = [total, 0]
        if not members:
            return out
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(key, f"({members[0][1]!r}", "+inf")
        for member, _ in members:
            pipe.hmget(self.keys.account(member), "name", "category", "fans",
                       f"{window}.views", f"{window}.likes", f"{window}.uploads")
        above, *rows = await pipe.execute()
        out[1] = int(above) + 1
        for (member, score), row in zip(members, rows, strict=True):
            out += [member, score, *row]
        return out

    async def leaderboard(self, window: str, board: str, offset: int, limit: int
                          ) -> Leaderboard:
        """A page of a board, with each entry's account figures, in one round trip."""
        if self.cluster:
            found = await self._page_by_slot(window, board, offset, limit)
        else:
            found = await self._page(keys=[self.keys.board(window, board)],
                                     args=[self.keys.account(""), window, offset, limit])
        total, first_rank, flat = int(found[0]), int(found[1]), found[2:]
        rows = [flat[i:i + PAGE_WIDTH] for i in range(0, len(flat), PAGE_WIDTH)]
        ranks = competition_ranks([float(row[1]) for row in rows], first_rank, offset)
        entries = [
            Entry(rank=rank, account_id=account_id, name=name, category=category,
                  score=float(score), fans=int(fans or 0), views=int(views or 0),
                  likes=int(likes or 0), uploads=int(uploads or 0))
            for (account_id, score, name, category, fans, views, likes, uploads), rank
            in zip(rows, ranks, strict=True)
        ]
        return Leaderboard(window=window, board=board, total=total, offset=offset, limit=limit,
                           entries=entries)

    async def around(self, window: str, board: str, account_id: str, radius: int
                     ) -> Around | None:
        key = self.keys.board(window, board)
        position: int | None = await self.client.zrevrank(key, account_id)  # type: ignore[assignment]
        if position is None:
            return None
        start = max(0, position - radius)
        page = await self.leaderboard(window, board, start, position - start + radius + 1)
        own = next(e.rank for e in page.entries if e.account_id == account_id)
        return Around(window=window, board=board, account_id=account_id, rank=own,
                      total=page.total, entries=page.entries)

    async def account(self, account_id: str) -> Account | None:
        data: dict[str, str] = await self.client.hgetall(  # type: ignore[assignment]
            self.keys.account(account_id))
        if not data:
            return None
        windows = {
            w: WindowMetrics(views=int(data.get(f"{w}.views", 0)),
                             likes=int(data.get(f"{w}.likes", 0)),
                             uploads=int(data.get(f"{w}.uploads", 0)),
                             index=float(data.get(f"{w}.index", 0.0)))
            for w in self.windows.ids
        }
        boards = ["all"]
        if data.get("category"):
            boards.append(f"cat:{data['category']}")
        # its own campaigns, not every campaign's board (tests/test_reader.py)
        campaigns: set[str] = await self.client.smembers(  # type: ignore[assignment]
            self.keys.account_campaigns(account_id))
        boards += [f"campaign:{c}" for c in sorted(campaigns)]
        pipe = self.client.pipeline(transaction=False)
        pairs = [(w, b) for w in self.windows.ids for b in boards]
        for window, board in pairs:
            pipe.zscore(self.keys.board(window, board), account_id)
        scores = await pipe.execute()
        standing = [(w, b, score) for (w, b), score in zip(pairs, scores, strict=True)
                    if score is not None]
        pipe = self.client.pipeline(transaction=False)
        for window, board, score in standing:
            pipe.zcount(self.keys.board(window, board), f"({score!r}", "+inf")
        above = await pipe.execute() if standing else []
        ranks = [BoardRank(window=w, board=b, rank=int(n) + 1, score=score)
                 for (w, b, score), n in zip(standing, above, strict=True)]
        return Account(account_id=account_id, name=data.get("name"),
                       category=data.get("category"), fans=int(data.get("fans", 0)),
                       windows=windows, ranks=ranks)

    async def series(self, campaign: str, step: str) -> CampaignSeries:
        """A campaign's series: the partitions' shares summed per bucket, the buckets in
        the span of the clock in `meta` (older cells linger until their chunk leaves:
        streams/core/series.py), ascending."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.meta, "clock")
        pipe.hgetall(self.keys.series(campaign, step))
        clock, cells = await pipe.execute()
        index = STEP_INDEX[step]
        unit = UNITS[index]
        first = (int(clock or 0) // unit - SPANS[index] + 1) * unit
        sums: dict[int, list[int]] = {}
        for name, value in cells.items():
            bucket_ms = int(name.partition(":")[0])
            if bucket_ms < first:
                continue
            found = sums.setdefault(bucket_ms, [0, 0, 0, 0])
            for i, part in enumerate(value.split(",")):
                found[i] += int(part)
        points = [SeriesPoint(t=t, views=v, likes=lk, uploads=u, accounts=a)
                  for t, (v, lk, u, a) in sorted(sums.items())]
        return CampaignSeries(campaign=campaign, step=step, points=points)

    async def campaign(self, campaign: str, top: int) -> Campaign | None:
        data: dict[str, str] = await self.client.hgetall(  # type: ignore[assignment]
            self.keys.campaign(campaign))
        if not data:
            return None
        windows = {}
        for window in self.windows.ids:
            board = await self.leaderboard(window, f"campaign:{campaign}", 0, top)
            windows[window] = CampaignWindow(
                views=int(data.get(f"{window}.views", 0)),
                likes=int(data.get(f"{window}.likes", 0)),
                uploads=int(data.get(f"{window}.uploads", 0)),
                accounts=int(data.get(f"{window}.accounts", 0)),
                top=board.entries)
        return Campaign(campaign=campaign, windows=windows)
