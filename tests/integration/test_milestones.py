"""Milestones on the real Redis: each crossing fires once whichever API processes check it
and across restarts, re-arms below, and reaches feed clients and /metrics."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import orjson
import redis
import redis.asyncio as aioredis

from streams.api.milestone_rules import CampaignViews, EntersTop
from streams.api.milestones import Milestones
from streams.sink.keys import RedisKeys
from tests.integration.conftest import api_process

RULES = (EntersTop("lead", 2, "24h", "all"), CampaignViews("big", "24h", 100))


def test_a_crossing_fires_once_across_processes_and_restarts_and_re_arms(stack):
    keys = RedisKeys(f"ms{uuid.uuid4().hex[:8]}:")
    r = redis.Redis.from_url(stack.redis, decode_responses=True)
    r.sadd(keys.campaigns, "spring", "autumn")
    r.hset(keys.campaign("spring"), "24h.views", 150)
    r.hset(keys.campaign("autumn"), "24h.views", 20)
    leading = {("24h", "all"): [("a", 9.0), ("b", 8.0), ("c", 1.0)]}
    moved = {("24h", "all"): [("c", 9.5), ("a", 9.0), ("b", 8.0)]}

    async def scenario() -> list[list[str]]:
        client = aioredis.Redis.from_url(stack.redis)
        two = [Milestones(client, keys, RULES), Milestones(client, keys, RULES)]
        fired = []
        # two API processes checking the same reading at once
        both = await asyncio.gather(*(m.check(1, leading) for m in two))
        fired.append(sorted(both[0] + both[1]))
        restarted = Milestones(client, keys, RULES)
        fired.append(await restarted.check(2, leading))  # already crossed: nothing
        fired.append(sorted(await restarted.check(3, moved)))  # b falls out, c enters
        fired.append(await restarted.check(4, leading))  # b back in: fires again
        await client.aclose()
        return fired

    try:
        fired = asyncio.run(scenario())
        assert fired == [["big:spring", "lead:a", "lead:b"], [], ["lead:c"], ["lead:b"]]
        alerts = [orjson.loads(f["alert"]) for _, f in r.xrange(keys.alerts)]
        assert [(a["rule"], a.get("account_id") or a.get("campaign")) for a in alerts] == [
            ("lead", "a"), ("lead", "b"), ("big", "spring"), ("lead", "c"), ("lead", "b")]
        assert alerts[3] == {"rule": "lead", "kind": "top", "account_id": "c", "window": "24h",
                             "board": "all", "top": 2, "rank": 1, "score": 9.5, "at": 3}
        assert r.hgetall(keys.milestones_fired) == {"lead": "4", "big": "1"}
        assert set(r.hkeys(keys.milestone("lead"))) == {"a", "b"}
    finally:
        found = list(r.scan_iter(f"{keys.prefix}*"))
        if found:
            r.delete(*found)


def test_alerts_reach_feed_clients_and_metrics(deploy):
    d = deploy(RANKFLOW_MILESTONES="lead=top:1:24h:all,big=views:24h:100")
    with api_process(d) as url, httpx.stream(
            "GET", f"{url}/api/stream", timeout=httpx.Timeout(10, read=30)) as feed:
        assert feed.status_code == 200
        lines = feed.iter_lines()
        assert next(lines).startswith("retry:")  # connected: what follows is relayed live
        d.redis.zadd(f"{d.prefix}lb:24h:all", {"a": 9.0, "b": 4.0})
        d.redis.sadd(f"{d.prefix}campaigns", "spring")
        d.redis.hset(f"{d.prefix}campaign:spring", "24h.views", 150)
        alerts, kind, event_id = [], None, None
        for line in lines:  # the recorder's next tick fires both (a read timeout fails)
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                if kind == "alert":
                    assert event_id is None, "an alert moves no Last-Event-ID"
                    alerts.append(json.loads(line[6:]))
                    if len(alerts) == 2:
                        break
                kind, event_id = None, None
        assert sorted(a["rule"] for a in alerts) == ["big", "lead"]
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rankflow_api_milestones_total{rule="lead"} 1.0' in metrics
        assert 'rankflow_api_milestones_total{rule="big"} 1.0' in metrics
