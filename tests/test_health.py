"""The worker's health (streams/worker/health.py) and its endpoint, driven through fakes.

tests/integration/test_worker_health.py probes a real worker.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import redis.asyncio as aioredis

from streams.worker.health import Liveness, Probe, Readiness
from streams.worker.health_server import HealthServer
from streams.worker.retry import retrying


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_not_ready_before_the_first_assignment_nor_while_a_partition_recovers():
    assigned: set[int] = {0, 3}
    recovered: set[int] = set()
    readiness = Readiness(lambda: assigned, recovered.__contains__)
    first = readiness.probe()
    assert not first.up and first.body["status"] == "starting"
    readiness.assignment_done(object(), signal=None)  # as faust's signal calls it
    recovered.add(3)
    recovering = readiness.probe()
    assert not recovering.up
    assert recovering.body["recovering"] == [0] and recovering.body["assigned"] == [0, 3]
    recovered.add(0)
    assert readiness.probe() == Probe(True, {"status": "ready", "assigned": [0, 3]})
    assigned.add(5)  # a rebalance hands over one more: not ready until it is read
    assert not readiness.probe().up


def test_an_assignment_of_no_partition_is_ready():
    readiness = Readiness(set, lambda p: False)
    readiness.assignment_done()
    assert readiness.probe().up


def test_live_until_a_write_fails_without_a_break_for_longer_than_the_setting():
    clock = FakeClock()
    liveness = Liveness(60, clock)
    assert liveness.probe().up
    liveness.failing("writing Redis", since=clock.now)
    clock.now += 30
    liveness.failing("writing Redis", since=clock.now - 5)  # another write's run: later
    assert liveness.probe().up
    assert liveness.probe().body["failing_seconds"] == {"writing Redis": 30.0}
    clock.now += 31
    dead = liveness.probe()
    assert not dead.up and dead.body["status"] == "unhealthy"
    assert "writing Redis failing for over 60 s" in dead.body["reason"]
    liveness.failing("writing the changelog", since=clock.now)
    liveness.succeeded("writing Redis")
    back = liveness.probe()
    assert back.up and back.body["failing_seconds"] == {"writing the changelog": 0.0}


def test_the_retry_policy_feeds_the_liveness_and_logs_how_long_it_has_failed(caplog):
    clock = FakeClock()
    liveness = Liveness(15, clock)
    probes: list[Probe] = []
    failures = [aioredis.TimeoutError("Timeout reading from 127.0.0.1:6379")] * 3

    async def step():
        clock.now += 10  # each attempt waits out the socket timeout
        if failures:
            failures.pop()
            raise aioredis.TimeoutError("Timeout reading from 127.0.0.1:6379")
        return "written"

    async def sleep(delay):
        probes.append(liveness.probe())
        clock.now += delay

    with caplog.at_level(logging.WARNING):
        result = asyncio.run(retrying("writing Redis", step, sleep, liveness, clock))
    assert result == "written"
    assert [p.up for p in probes] == [True, False, False]  # 10 s, 20.2 s, 30.6 s failing
    assert "writing Redis: no answer for 10 s (Timeout reading from 127.0.0.1:6379); " \
        "retrying in 0.2s" in caplog.text
    assert "writing Redis: no answer for 31 s" in caplog.text
    assert "writing Redis works again after 41.4 s" in caplog.text
    assert liveness.probe().up and liveness.failing_since == {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_endpoint_answers_200_or_503_with_the_probes_body():
    port = free_port()
    answers = {"/ready": Probe(False, {"status": "recovering"}),
               "/live": Probe(True, {"status": "live"})}
    server = HealthServer("127.0.0.1", port, {path: (lambda p=path: answers[p])
                                             for path in answers})

    async def main():
        await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                got = {}
                for path in ("/ready", "/live", "/other"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        got[path] = (response.status, await response.json()
                                     if response.status != 404 else None)
        finally:
            await server.stop()
        return got

    assert asyncio.run(main()) == {"/ready": (503, {"status": "recovering"}),
                                   "/live": (200, {"status": "live"}), "/other": (404, None)}
