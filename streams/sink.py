"""Writes the Redis layout of contract §4 from state, as absolute values, pipelined.

Every write sets a value computed from state (never INCR), so a replay after a crash
or a rebalance rewrites the same values: Redis converges. Totals that span partitions
(`rf:meta`, `rf:campaign:{c}`) are summed by a Lua script from per-partition fields,
so two workers owning different partitions never overwrite each other's share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from streams.aggregate import PartitionRuntime
from streams.scoring import DEFAULT_SCORING, ScoringConfig, influence_index
from streams.state import LIKES, UPLOADS, VIEWS, AccountState
from streams.windows import FixedWindows

# KEYS[1]: per-partition parts hash, KEYS[2]: total hash. ARGV[1]: partition,
# then field/value pairs. Sets the partition's share, then every total as the sum of
# all partitions' shares. Fields named in ARGV[2] "max:" are combined by max, not sum.
SUM_PARTS = """
local part = ARGV[1]
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], part .. '|' .. ARGV[i], ARGV[i + 1])
end
local all = redis.call('HGETALL', KEYS[1])
local sums = {}
for i = 1, #all, 2 do
  local field = string.match(all[i], '|(.*)$')
  if field then
    local v = tonumber(all[i + 1])
    if string.sub(field, 1, 4) == 'max:' then
      field = string.sub(field, 5)
      if sums[field] == nil or v > sums[field] then sums[field] = v end
    else
      sums[field] = (sums[field] or 0) + v
    end
  end
end
for field, v in pairs(sums) do
  redis.call('HSET', KEYS[2], field, string.format('%.0f', v))
end
return #all
"""


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The key names of contract §4 under a prefix."""

    prefix: str = "rf:"

    def board(self, window: str, board: str) -> str:
        return f"{self.prefix}lb:{window}:{board}"

    def account(self, account_id: str) -> str:
        return f"{self.prefix}acct:{account_id}"

    def campaign(self, campaign: str) -> str:
        return f"{self.prefix}campaign:{campaign}"

    def campaign_parts(self, campaign: str) -> str:
        return f"{self.prefix}campaign:{campaign}:partitions"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def meta_parts(self) -> str:
        return f"{self.prefix}meta:partitions"


class RedisBoardWriter:
    """Rewrites the boards and hashes of changed accounts, campaigns and partitions."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        windows: FixedWindows,
        scoring: ScoringConfig = DEFAULT_SCORING,
    ) -> None:
        self.client = client
        self.keys = keys
        self.windows = windows
        self.scoring = scoring
        self._sum_parts = client.register_script(SUM_PARTS)

    async def write(
        self,
        accounts: Iterable[AccountState],
        profiles: set[str],
        runtimes: Mapping[int, PartitionRuntime],
        campaigns: Mapping[int, set[str]],
        partitions: Iterable[int],
        clock_ms: int | None,
        now_ms: int,
    ) -> None:
        """One batch: accounts, then campaign totals, then `meta` (last: it says "done")."""
        accounts = list(accounts)
        listed_as = await self._listed_categories([a for a in accounts
                                                   if a.account_id in profiles])
        pipe = self.client.pipeline(transaction=False)
        for state in accounts:
            self._account(pipe, state, listed_as.get(state.account_id))
        for partition, names in campaigns.items():
            runtime = runtimes[partition]
            for campaign in names:
                await self._campaign_totals(pipe, partition, campaign, runtime)
        for partition in partitions:
            header = runtimes[partition].header
            clock = header.clock if clock_ms is None else clock_ms
            await self._sum_parts(keys=[self.keys.meta_parts, self.keys.meta], args=[
                partition, "events", header.events, "dlq", header.dlq,
                "max:clock", clock, "max:updated_at", now_ms,
            ], client=pipe)
        await pipe.execute()

    async def _listed_categories(self, accounts: list[AccountState]) -> dict[str, str | None]:
        """The category each account is listed under in Redis now (before a move)."""
        if not accounts:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for state in accounts:
            pipe.hget(self.keys.account(state.account_id), "category")
        found = await pipe.execute()
        return {s.account_id: (c.decode() if c else None) for s, c in zip(accounts, found,
                                                                           strict=True)}

    def _account(self, pipe: aioredis.client.Pipeline, state: AccountState,
                 listed_as: str | None) -> None:
        account_id = state.account_id
        keys = self.keys
        category = state.category
        fans = state.fans
        fields: dict[str | bytes, bytes | str | int | float] = {"fans": fans}
        if listed_as is not None and (listed_as != category or not state.listed):
            for window in self.windows.ids:
                pipe.zrem(keys.board(window, f"cat:{listed_as}"), account_id)
        for window in self.windows.ids:
            metrics = state.metrics(window)
            views, likes, uploads = metrics[VIEWS], metrics[LIKES], metrics[UPLOADS]
            index = influence_index(views, likes, uploads, fans, self.windows.days(window),
                                    self.scoring)
            fields[f"{window}.views"] = views
            fields[f"{window}.likes"] = likes
            fields[f"{window}.uploads"] = uploads
            fields[f"{window}.index"] = index
            if state.listed:
                pipe.zadd(keys.board(window, "all"), {account_id: index})
                pipe.zadd(keys.board(window, f"cat:{category}"), {account_id: index})
            else:
                pipe.zrem(keys.board(window, "all"), account_id)
            for campaign, sums in state.campaigns.items():
                board = keys.board(window, f"campaign:{campaign}")
                campaign_views = sums[window][VIEWS] if window in sums else 0
                if state.listed and campaign_views > 0:
                    pipe.zadd(board, {account_id: campaign_views})
                else:
                    pipe.zrem(board, account_id)
        account_key = keys.account(account_id)
        if state.listed:
            fields["category"] = category
        if state.profile is not None:
            fields["name"] = state.profile.name
        else:
            pipe.hdel(account_key, "name", *(() if state.listed else ("category",)))
        pipe.hset(account_key, mapping=fields)  # type: ignore[arg-type]

    async def _campaign_totals(self, pipe: aioredis.client.Pipeline, partition: int, campaign: str,
                         runtime: PartitionRuntime) -> None:
        args: list[str | int] = [partition]
        totals = runtime.campaigns.get(campaign, {})
        for window in self.windows.ids:
            sums = totals.get(window, (0, 0, 0, 0))
            for name, value in zip(("views", "likes", "uploads", "accounts"), sums,
                                   strict=True):
                args += [f"{window}.{name}", value]
        keys = [self.keys.campaign_parts(campaign), self.keys.campaign(campaign)]
        await self._sum_parts(keys=keys, args=args, client=pipe)
