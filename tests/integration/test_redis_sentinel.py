"""Redis Sentinel: clients made with RANKFLOW_REDIS_SENTINELS write to the primary it names.

Starts a redis-server and a sentinel (`redis-server --sentinel`) of its own on spare ports;
the shared dev stack is not touched.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streams.ops.connections import redis_client
from streams.ops.settings import Settings
from tests.integration.test_outages import free_ports


def wait_answering(port: int, proc: subprocess.Popen[bytes]) -> None:
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the test's redis on port {port} did not start")


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(the primary's port, the sentinel's port): a sentinel monitoring `rankflow`."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    primary, watcher = free_ports(2, 26500)
    conf = tmp_path / "sentinel.conf"  # the sentinel rewrites its configuration file
    conf.write_text(f"port {watcher}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor rankflow 127.0.0.1 {primary} 1\n")
    procs = [subprocess.Popen([server, "--port", str(primary), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_answering(primary, procs[0])
        procs.append(subprocess.Popen([server, str(conf), "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_answering(watcher, procs[1])
        yield primary, watcher
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_clients_write_through_the_sentinels_primary(sentinel):
    primary, watcher = sentinel
    settings = Settings(redis="redis://127.0.0.1:1/2",  # the port is the sentinel's to say
                        redis_sentinels=f"127.0.0.1:{watcher}",
                        redis_sentinel_master="rankflow")

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
    direct = redis.Redis(port=primary, db=2, decode_responses=True)
    assert direct.hgetall("sentinel-test") == {"async-False": "1", "async-True": "1",
                                               "sync": "1"}
