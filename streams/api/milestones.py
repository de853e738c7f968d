"""Milestones: the recorder's readings checked against the rules, each crossing fired once.

The recording API process (streams/api/recorder.py) hands every tick's reading to
`Milestones.check`. Per rule, the subjects past it now (streams/api/milestone_rules.py)
go to one Lua script that holds the crossing state in Redis (`rf:milestones:{rule}`, the
subjects that crossed): a subject not in it is added, its alert appended to the
`rf:alerts` stream and the rule's count in `rf:milestones:fired` raised; a subject in it
that is no longer past the rule is removed (re-armed). The check and the fire are one
atomic step, so a crossing fires once whichever API processes check it and across
restarts (tests/integration/test_milestones.py). Every API process relays `rf:alerts` to
its live-feed clients (streams/api/feed.py) and renders the counts on /metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import orjson
import redis.asyncio as aioredis

from streams.api.milestone_rules import CampaignViews, Rule, standing
from streams.api.recorder import Tops
from streams.sink.keys import RedisKeys

log = logging.getLogger(__name__)
#: alerts the stream keeps (about)
ALERTS_KEPT = 10_000

# KEYS[1] the rule's crossed subjects, KEYS[2] the alert stream, KEYS[3] the fired counts.
# ARGV[1] the rule, ARGV[2] the tick, ARGV[3] alerts kept, then subject, alert pairs of
# every subject past the rule now. Returns the subjects that fired.
FIRE = """
local past, fired = {}, {}
for i = 4, #ARGV, 2 do
  local subject = ARGV[i]
  past[subject] = true
  if redis.call('HSETNX', KEYS[1], subject, ARGV[2]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'alert', ARGV[i + 1])
    redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
    table.insert(fired, subject)
  end
end
for _, subject in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not past[subject] then redis.call('HDEL', KEYS[1], subject) end
end
return fired
"""


class Milestones:
    """Checks the rules at each reading; fires each crossing once, through Redis."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, rules: Sequence[Rule]) -> None:
        self.client, self.keys, self.rules = client, keys, tuple(rules)
        self._fire = client.register_script(FIRE)

    async def check(self, tick: int, tops: Tops) -> list[str]:
        """Fire the crossings of this reading; the subjects fired, as `rule:subject`."""
        fired: list[str] = []
        for rule in self.rules:
            views = await self._campaign_views(rule.window) \
                if isinstance(rule, CampaignViews) else {}
            past = standing(rule, tick, tops, views)
            args: list[str | int | bytes] = [rule.name, tick, ALERTS_KEPT]
            for subject, alert in past.items():
                args += [subject, orjson.dumps(alert)]
            found = cast(list[bytes | str], await self._fire(
                keys=[self.keys.milestone(rule.name), self.keys.alerts,
                      self.keys.milestones_fired], args=args))
            for subject in map(_text, found):
                log.info("milestone %s: %s", rule.name, subject)
                fired.append(f"{rule.name}:{subject}")
        return fired

    async def _campaign_views(self, window: str) -> dict[str, int]:
        found_campaigns: set[bytes | str] = await self.client.smembers(self.keys.campaigns)
        campaigns = sorted(_text(c) for c in found_campaigns)
        pipe = self.client.pipeline(transaction=False)
        for campaign in campaigns:
            pipe.hget(self.keys.campaign(campaign), f"{window}.views")
        found = await pipe.execute() if campaigns else []
        return {c: int(v or 0) for c, v in zip(campaigns, found, strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
