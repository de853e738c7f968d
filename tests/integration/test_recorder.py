"""The rank recorder on the real Redis: one recorder at a time writes each tick once,
trims by time, and another API process takes over when the recorder is killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from streams.api.app import create_api
from streams.api.lease import Lease
from streams.api.rank_samples import DAY_MS, STEPS
from streams.api.recorder import RankRecorder
from streams.core.windows import Windows
from streams.ops.settings import Settings
from streams.sink.keys import RedisKeys
from tests.integration.conftest import api_process

FAST, SLOW = STEPS["10s"], STEPS["10m"]
TICK = FAST.ms


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> int:
        return self.at


@pytest.fixture
def prefix(stack):
    name = f"rec{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(stack.redis, decode_responses=True)
    r.zadd(f"{name}lb:24h:all", {"a": 9.0, "b": 9.0, "c": 4.5})
    r.zadd(f"{name}lb:1h:cat:police", {"a": 2.0, "c": 3.0})
    r.zadd(f"{name}lb:all:campaign:spring", {"c": 70})
    r.sadd(f"{name}categories", "police")
    r.sadd(f"{name}campaigns", "spring")
    for account_id in "abc":
        r.hset(f"{name}acct:{account_id}", mapping={"name": account_id, "category": "police"})
    yield name
    keys = list(r.scan_iter(f"{name}*"))
    if keys:
        r.delete(*keys)


def recorder(stack: Settings, prefix: str, clock: Clock, ttl: float = 5.0
             ) -> tuple[aioredis.Redis, RankRecorder]:
    client = aioredis.Redis.from_url(stack.redis)
    keys = RedisKeys(prefix)
    return client, RankRecorder(client, keys, Windows(), Lease(client, keys.recorder_lease, ttl),
                                clock=clock)


def test_one_recorder_writes_each_tick_once_and_keeps_only_the_span(stack, prefix):
    r = redis.Redis.from_url(stack.redis)
    t0 = SLOW.tick(int(time.time() * 1000)) + 3 * TICK + 1234
    clock = Clock(t0)
    ring = f"{prefix}rank-history:10s:24h:all:b"

    async def scenario() -> None:
        client, first = recorder(stack, prefix, clock)
        client2, second = recorder(stack, prefix, clock)
        await first.beat()
        await second.beat()  # no lease: writes nothing
        assert first.lease.held and not second.lease.held
        assert FAST.points(r.get(ring), t0) == [(FAST.tick(t0), 9.0, 1)]
        # a recorder overlapping at the same tick overwrites the same slot: one record
        r.zadd(f"{prefix}lb:24h:all", {"b": 1.0})
        await second.write(FAST.tick(t0), await second.read_tops(), FAST)
        assert FAST.points(r.get(ring), t0) == [(FAST.tick(t0), 1.0, 3)]
        clock.at += TICK
        await first.beat()
        clock.at += DAY_MS  # a day after the second tick: its slot holds the new one
        await first.beat()
        await client.aclose()
        await client2.aclose()

    asyncio.run(scenario())
    assert FAST.points(r.get(ring), clock.at) == [(FAST.tick(clock.at), 1.0, 3)]
    assert r.strlen(ring) <= FAST.ring_bytes
    assert SLOW.points(r.get(f"{prefix}rank-history:10m:1h:cat:police:a"), clock.at) == [
        (SLOW.tick(t0), 2.0, 2), (SLOW.tick(clock.at), 2.0, 2)]
    assert 0 < r.pttl(ring) <= DAY_MS + TICK
    assert 0 < r.pttl(f"{prefix}rank-history:10m:all:campaign:spring:c") <= 30 * DAY_MS + SLOW.ms
    assert not list(r.scan_iter(f"{prefix}rank-history:*:nobody"))


def test_the_endpoint_serves_a_board_s_series_and_refuses_bad_parameters(stack, prefix):
    now = int(time.time() * 1000)
    clock = Clock(now - 2 * TICK)

    async def two_ticks() -> None:
        client, rec = recorder(stack, prefix, clock)
        await rec.beat()
        clock.at += TICK
        await client.zadd(f"{prefix}lb:24h:all", {"c": 10.0})
        await rec.beat()
        await client.aclose()

    asyncio.run(two_ticks())
    first = FAST.tick(now - 2 * TICK)
    with TestClient(create_api(Settings(prefix=prefix, redis=stack.redis))) as api:
        body = api.get("/api/accounts/c/history").json()
        assert (body["window"], body["board"], body["step"]) == ("24h", "all", "10s")
        assert body["points"][:2] == [[first, 4.5, 3], [first + TICK, 10.0, 1]]
        police = api.get("/api/accounts/c/history",
                         params={"window": "1h", "board": "cat:police", "step": "10m"}).json()
        assert police["points"][0] == [SLOW.tick(first), 3.0, 1]
        assert api.get("/api/accounts/c/history", params={"window": "7d"}).json()[
            "points"] == []
        assert api.get("/api/accounts/nobody/history").status_code == 404
        for params in ({"step": "1m"}, {"window": "2h"}, {"board": "cats:x"}):
            response = api.get("/api/accounts/c/history", params=params)
            assert response.status_code == 422 and "error" in response.json()
        spec = api.get("/openapi.json").json()["paths"]["/api/accounts/{account_id}/history"]
        assert {p["name"] for p in spec["get"]["parameters"]} >= {"window", "board", "step"}


def test_another_api_process_takes_over_when_the_recorder_is_killed(deploy):
    d = deploy(RANKFLOW_API_RECORDER_LEASE="2")
    d.redis.zadd(f"{d.prefix}lb:24h:all", {"a": 9.0, "b": 4.0})
    d.redis.hset(f"{d.prefix}acct:a", mapping={"name": "a"})
    lease, ring = f"{d.prefix}recorder:lease", f"{d.prefix}rank-history:10s:24h:all:a"
    with api_process(d) as first_url, api_process(d) as second_url:
        d.wait_for(lambda: d.redis.exists(ring), 20, "a first sample")
        holder = d.redis.get(lease)
        assert holder is not None
        # any API process answers the same (asked again if a sample landed in between)
        def same_answers() -> bool:
            first, second = (httpx.get(f"{url}/api/accounts/a/history").json()
                             for url in (first_url, second_url))
            return first == second and bool(first["points"])

        d.wait_for(same_answers, 30, "both API processes answering the same history")
        pid = int(holder.split(":")[1])
        os.kill(pid, signal.SIGKILL)
        killed_at = int(time.time() * 1000)
        d.wait_for(lambda: d.redis.get(lease) not in (None, holder), 20, "a new holder")
        raw = redis.Redis.from_url(d.settings.redis)
        d.wait_for(lambda: FAST.points(raw.get(ring), int(time.time() * 1000))[-1][0]
                   > killed_at, 20, "a sample by the new holder")
        answers = []
        for url in (first_url, second_url):
            with contextlib.suppress(httpx.TransportError):  # the killed one does not answer
                answers.append(httpx.get(f"{url}/api/accounts/a/history", timeout=2).json())
        assert len(answers) == 1 and answers[0]["points"][-1][0] > killed_at
