"""Kafka and Redis going away: the worker rides it out and still ends exact.

These tests start a dedicated Kafka and Redis of their own (other ports, another cache
folder; the jars Maven resolved for the shared stack are reused), so stopping them does
not disturb the other tests on the shared stack.

* the broker is stopped (SIGTERM, a controlled shutdown) in the middle of a replay and
  started again a few seconds later: the worker reconnects and finishes with the exact
  state of the brute-force reference;
* a worker started while Kafka and Redis are both down waits for each with a clear log
  line, and works once they come up;
* a worker killed while its Redis write is held back (after the batch's changelog
  records are written) must still end with the right campaign totals and decayed
  windows (regression tests for d78abe2: recovered partitions are rewritten from state).

A wait that times out fails, with the worker's task stacks dumped into its log (a worker
once stalled in a Kafka write; fixed in b063386).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
import pytest

from streams.core.ingest import partition_for
from streams.dev.devstack import DevStack
from streams.dev.simulate import Message
from streams.ops.settings import Settings
from tests.integration.conftest import ARTIFACTS, Deployment
from tests.integration.exactness import (
    PERIODS,
    compare,
    contract_keys,
    describe,
    end_offsets,
    expected_layout,
    expected_replay,
    layout,
    scenario,
    stack_dump,
)
from tests.reference import Expected

EVENTS = 20_000
START = 1_525_000_000_000
HOUR = 3_600_000


def free_ports(count: int, start: int) -> list[int]:
    """`count` consecutive free loopback ports from `start` on."""
    for base in range(start, start + 2000, count):
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free ports")


@dataclass
class OwnStack:
    settings: Settings
    dev: DevStack

    @property
    def env(self) -> dict[str, str]:
        return {"RANKFLOW_KAFKA": self.settings.kafka, "RANKFLOW_REDIS": self.settings.redis}


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory) -> Iterator[OwnStack]:
    kafka_port, _ = free_ports(2, 29092)  # the broker, then its controller
    (redis_port,) = free_ports(1, 26379)
    settings = Settings(kafka=f"127.0.0.1:{kafka_port}",
                        redis=f"redis://127.0.0.1:{redis_port}/0",
                        cache_dir=tmp_path_factory.mktemp("own-stack"))
    dev = DevStack(settings)
    try:
        dev.up(timeout=120)
        yield OwnStack(settings, dev)
    finally:
        dev.down()


@dataclass
class Replay:
    messages: list
    expected: Expected
    clock: int


@pytest.fixture(scope="module")
def replay() -> Replay:
    messages = scenario(EVENTS, seed=31)
    expected, clock = expected_replay(messages)
    return Replay(messages, expected, clock)


def deployment(own_stack: OwnStack, **env: str) -> Deployment:
    return Deployment(own_stack.settings, f"o{uuid.uuid4().hex[:10]}",
                      {**own_stack.env, "RANKFLOW_CLOCK": "event", "RANKFLOW_PERIODS": PERIODS,
                       **env})


def assert_exact(d: Deployment, replay: Replay) -> None:
    d.wait_counted(replay.expected.counted, replay.expected.dead, timeout=120)
    d.wait_for(lambda: d.meta().get("clock") == str(replay.clock), 30, "the event clock")
    got = contract_keys(layout(d.redis, d.prefix))
    want = expected_layout(replay.expected, replay.clock)
    diff = compare(got, want)
    assert diff.keys == [], describe(got, want, diff.keys)


def worker_log(d: Deployment, n: int = 0) -> str:
    return (ARTIFACTS / f"{d.name}-worker{n}.log").read_text(errors="replace")


@contextmanager
def diagnosed(d: Deployment) -> Iterator[None]:
    """A wait that times out still fails; its message names the dump of the last worker's
    task stacks (a stall shows where the worker is held)."""
    try:
        yield
    except AssertionError as exc:
        if not d.workers:
            raise
        n = len(d.workers) - 1
        dump = stack_dump(d.workers[-1], ARTIFACTS / f"{d.name}-worker{n}.log")
        raise AssertionError(f"{exc}; {dump}") from exc


@pytest.mark.timeout(240)
def test_the_broker_restarts_mid_replay_and_the_worker_ends_exact(own_stack, replay):
    d = deployment(own_stack, RANKFLOW_BATCH_MAX_RECORDS="300")
    try:
        d.produce(replay.messages)
        worker = d.start_worker()
        total = replay.expected.counted
        with diagnosed(d):
            d.wait_for(lambda: int(d.meta().get("events", 0)) >= total // 5, 90,
                       "a fifth of the events counted")
        own_stack.dev.stop_kafka()
        stopped_at = int(d.meta().get("events", 0))
        time.sleep(4)
        assert worker.poll() is None, "the worker exited while the broker was down"
        own_stack.dev.start_kafka()
        own_stack.dev.wait_kafka(90)
        assert stopped_at < total, "the broker was stopped before the end of the replay"
        with diagnosed(d):
            assert_exact(d, replay)
        assert worker.poll() is None
    finally:
        d.close()


@pytest.mark.timeout(240)
def test_a_worker_started_while_kafka_and_redis_are_down_waits_then_works(own_stack, replay):
    d = deployment(own_stack)  # creates the topics: the broker is up here
    try:
        d.produce(replay.messages)
        own_stack.dev.stop_kafka()
        own_stack.dev.stop_redis()
        worker = d.start_worker()
        kafka = own_stack.settings.kafka
        d.wait_for(lambda: f"waiting for Kafka at {kafka}: " in worker_log(d), 30,
                   "the worker to say it waits for Kafka")
        time.sleep(3)
        assert worker.poll() is None, "the worker gave up while Kafka was down"
        own_stack.dev.start_kafka()
        own_stack.dev.wait_kafka(90)
        d.wait_for(lambda: "waiting for Redis at redis://127.0.0.1:" in worker_log(d), 30,
                   "the worker to say it waits for Redis")
        assert worker.poll() is None, "the worker gave up while Redis was down"
        own_stack.dev.start_redis()
        own_stack.dev.wait_redis(30)
        with diagnosed(d):
            assert_exact(d, replay)
        log = worker_log(d)
        assert f"Kafka at {kafka} answers" in log
        assert "Traceback" not in log
    finally:
        own_stack.dev.up(timeout=120)
        d.close()
        for proc in d.workers:
            assert proc.returncode in (0, -signal.SIGTERM), proc.returncode


def campaign_view(account_id: str, event_id: str, ts: int, count: int) -> Message:
    return Message("view", account_id.encode(), orjson.dumps(
        {"event_id": event_id, "account_id": account_id, "ts": ts, "count": count,
         "campaign": "youth-day"}))


def crash_before_the_redis_write(d: Deployment, message: Message) -> None:
    """Produce `message` while Redis holds writes back (CLIENT PAUSE WRITE on the stack's
    own Redis); once its batch's state is in the changelog, SIGKILL the worker."""
    r = d.redis
    changelog = f"{d.name}-partition-state-changelog"
    bootstrap = d.settings.bootstrap_servers

    def written() -> int:
        return sum(asyncio.run(end_offsets(bootstrap, changelog)).values())

    # the worker has claimed Redis (else its successor rewrites all it restores anyway)
    d.wait_for(lambda: bool(r.exists(f"{d.prefix}generation")), 30, "the generation marker")
    before = written()
    r.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        d.produce([message])
        d.wait_for(lambda: written() > before, 30, "the batch's state in the changelog")
        time.sleep(0.5)
        d.stop(d.workers[-1], signal.SIGKILL)
    finally:
        r.execute_command("CLIENT", "UNPAUSE")


@pytest.mark.timeout(120)
def test_a_crash_between_the_changelog_and_the_redis_write_loses_no_campaign_total(
        own_stack):
    """The restarted worker replays the batch whose Redis write the crash lost."""
    d = deployment(own_stack)
    r = d.redis
    try:
        d.produce([campaign_view("media.c1", "c1", START, 5)])
        d.start_worker()
        with diagnosed(d):
            d.wait_counted(1, 0, timeout=30)
        assert r.hget(f"{d.prefix}campaign:youth-day", "all.views") == "5"
        crash_before_the_redis_write(d, campaign_view("media.c1", "c2", START + 1000, 7))
        assert r.hget(f"{d.prefix}acct:media.c1", "all.views") == "5", "written anyway"
        d.start_worker()
        with diagnosed(d):
            d.wait_for(lambda: r.hget(f"{d.prefix}acct:media.c1", "all.views") == "12", 60,
                       "the replayed account rewritten")
            d.wait_counted(2, 0, timeout=30)
        assert r.zscore(f"{d.prefix}lb:all:campaign:youth-day", "media.c1") == 12
        assert r.hget(f"{d.prefix}campaign:youth-day", "all.views") == "12", \
            "the campaign total lost the replayed batch"
    finally:
        d.close()


@pytest.mark.timeout(120)
def test_a_crash_before_the_redis_write_loses_no_decay(own_stack):
    """A batch moves the clock past an account's bucket (that account decays in it, with
    no event of its own); its Redis write is lost to a crash; the replay must decay it."""
    d = deployment(own_stack)
    r = d.redis
    idle, busy = accounts_on_one_partition()
    try:
        d.produce([campaign_view(idle, "i1", START, 5)])
        d.start_worker()
        with diagnosed(d):
            d.wait_counted(1, 0, timeout=30)
        assert r.hget(f"{d.prefix}acct:{idle}", "1h.views") == "5"
        crash_before_the_redis_write(d, campaign_view(busy, "b1", START + 2 * HOUR, 3))
        assert r.hget(f"{d.prefix}acct:{idle}", "1h.views") == "5", "written anyway"
        d.start_worker()
        with diagnosed(d):
            d.wait_counted(2, 0, timeout=30)
            d.wait_for(lambda: r.hget(f"{d.prefix}acct:{busy}", "1h.views") == "3", 30,
                       "the replayed account rewritten")
        assert r.hget(f"{d.prefix}acct:{idle}", "1h.views") == "0", \
            "the account that decayed in the lost write still counts the view in 1h"
    finally:
        d.close()


def accounts_on_one_partition() -> tuple[str, str]:
    """Two accounts of one partition (so the second's batch restores the first's)."""
    first = "police.decays"
    second = next(f"media.moves{i}" for i in range(200)
                  if partition_for(f"media.moves{i}", 8) == partition_for(first, 8))
    return first, second
