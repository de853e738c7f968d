"""Redis Sentinel: clients made with RANKFLOW_REDIS_SENTINELS write to the primary it names,
and after a failover to the new one.

Starts a primary, a replica and a sentinel (`redis-server --sentinel`) of its own on spare
ports; the shared dev stack is not touched.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import redis

from streams.ops.connections import redis_client
from streams.ops.settings import Settings
from tests.integration.test_outages import free_ports

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class SentinelSet(NamedTuple):
    primary: int
    replica: int
    sentinel: int


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary and its replica, and a sentinel monitoring them as `rankflow`."""
    ports = SentinelSet(*free_ports(3, 26500))
    conf = tmp_path / "sentinel.conf"  # the sentinel rewrites its configuration file
    conf.write_text(f"port {ports.sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor rankflow 127.0.0.1 {ports.primary} 1\n"
                    "sentinel down-after-milliseconds rankflow 2000\n"
                    "sentinel failover-timeout rankflow 10000\n")
    procs = []
    try:
        for port, extra in ((ports.primary, []),
                            (ports.replica, ["--replicaof", "127.0.0.1", str(ports.primary)])):
            (tmp_path / str(port)).mkdir()
            procs.append(subprocess.Popen(
                [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path / str(port)), *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([SERVER, str(conf), "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_until(redis.Redis(port=port).ping, 10, f"the test's redis on port {port}")
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def failover(watcher: redis.Redis) -> bool:
    try:
        watcher.execute_command("SENTINEL", "FAILOVER", "rankflow")
        return True
    except redis.ResponseError as exc:
        if "NOGOODSLAVE" not in str(exc):
            raise
        return False


def settings_for(ports: SentinelSet) -> Settings:
    return Settings(redis="redis://127.0.0.1:1/2",  # the port is the sentinel's to say
                    redis_sentinels=f"127.0.0.1:{ports.sentinel}",
                    redis_sentinel_master="rankflow", redis_socket_timeout=3)


def test_clients_write_through_the_sentinels_primary(sentinel):
    settings = settings_for(sentinel)

    async def write() -> None:
        for blocking in (False, True):
            client = redis_client(settings, blocking=blocking, decode_responses=True)
            try:
                await client.hset("sentinel-test", f"async-{blocking}", "1")
            finally:
                await client.aclose()

    asyncio.run(write())
    sync = redis_client(settings, asyncio=False, decode_responses=True)
    sync.hset("sentinel-test", "sync", "1")
    direct = redis.Redis(port=sentinel.primary, db=2, decode_responses=True)
    assert direct.hgetall("sentinel-test") == {"async-False": "1", "async-True": "1",
                                               "sync": "1"}


def test_after_a_failover_the_same_client_writes_to_the_new_primary(sentinel):
    watcher = redis.Redis(port=sentinel.sentinel, decode_responses=True)
    replica = redis.Redis(port=sentinel.replica, db=2, decode_responses=True)
    wait_until(lambda: any(r["port"] == sentinel.replica
                           for r in watcher.sentinel_slaves("rankflow")),
               30, "the sentinel to know the replica")
    wait_until(lambda: replica.info("replication")["master_link_status"] == "up", 30,
               "the replica in sync")
    client = redis_client(settings_for(sentinel), decode_responses=True)

    async def write(value: str) -> int:
        """Retry as the worker does (streams/worker/retry.py): the demoted primary's
        READONLY answer is a ConnectionError that makes the pool ask the sentinel again."""
        for attempt in range(50):
            try:
                await client.set("failover-test", value)
                return attempt
            except redis.RedisError:
                await asyncio.sleep(0.2)
        raise AssertionError("no write within 10 s of the failover")

    async def main() -> int:
        await write("before")
        # the sentinel refuses (NOGOODSLAVE) until its own link to the replica is up
        wait_until(lambda: failover(watcher), 30, "the sentinel to start a failover")
        wait_until(lambda: int(watcher.sentinel_get_master_addr_by_name("rankflow")[1])
                   == sentinel.replica, 30, "the replica promoted")
        # until the sentinel demotes the old primary, it still takes writes on the
        # client's open connection (and loses them when it resyncs as a replica: Redis
        # replication is asynchronous; README, Guarantees)
        wait_until(lambda: old.info("replication")["role"] == "slave", 30,
                   "the old primary demoted")
        retries = await write("after")
        await client.aclose()
        return retries

    old = redis.Redis(port=sentinel.primary)
    retries = asyncio.run(main())
    assert retries >= 1, "the pooled connection to the old primary should have been refused"
    assert replica.get("failover-test") == "after"
    assert replica.info("replication")["role"] == "master"
