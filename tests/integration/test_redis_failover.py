"""A Redis Sentinel failover under a running worker: the primary is SIGKILLed while writes
are in flight, the sentinels promote the replica, and the layout ends exact.

Debian's `redis-sentinel`: a primary, its replica and three sentinels (quorum 2) of the
test's own, on spare ports. Replication is asynchronous, so the promoted replica may miss
the last writes the primary acknowledged (what Jepsen measured); the test cuts the
replication link just before the kill to make that likely (whether it happened is in the
artifact: a loss is certain in tests/integration/test_redis_behind.py and
tests/integration/test_fence_scripts.py). The worker finds
Redis behind its state by the owner stamps and rewrites those partitions
(streams/worker/redis_watch.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import redis

from tests.integration.conftest import ARTIFACTS
from tests.integration.exactness import expected_replay
from tests.integration.test_event_clock import PERIODS, exact_after_failover, scenario
from tests.integration.test_outages import free_ports
from tests.integration.test_redis_sentinel import wait_until

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SENTINEL = shutil.which("redis-sentinel")
MASTER = "rankflow"
RATE = 1_000.0  # events/s: a live replay of about 20 s


class Sentinels(NamedTuple):
    primary: subprocess.Popen[bytes]
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    """A primary, its replica, and three sentinels monitoring them with quorum 2."""
    primary_port, replica_port, *sentinel_ports = free_ports(5, 26600)
    procs = []

    def server(port: int, *extra: str) -> subprocess.Popen[bytes]:
        (tmp_path / str(port)).mkdir()
        proc = subprocess.Popen(
            [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path / str(port)), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    try:
        primary = server(primary_port)
        server(replica_port, "--replicaof", "127.0.0.1", str(primary_port))
        for port in sentinel_ports:
            conf = tmp_path / f"sentinel-{port}.conf"  # a sentinel rewrites its own file
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} 1500\n"
                            f"sentinel failover-timeout {MASTER} 10000\n")
            argv = [SENTINEL, str(conf)] if SENTINEL else [SERVER, str(conf), "--sentinel"]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for port in (primary_port, replica_port, *sentinel_ports):
            wait_until(redis.Redis(port=port).ping, 10, f"the test's redis on port {port}")
        watcher = redis.Redis(port=sentinel_ports[0], decode_responses=True)
        wait_until(lambda: len(watcher.sentinel_sentinels(MASTER)) == 2
                   and any(r["port"] == replica_port for r in watcher.sentinel_slaves(MASTER)),
                   30, "the sentinels to know each other and the replica")
        yield Sentinels(primary, primary_port, replica_port, sentinel_ports)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def kill_after_cutting_the_replication_link(sentinels: Sentinels) -> None:
    """Cut the replication link a few times while the worker writes, then SIGKILL the
    primary: what it acknowledged since the last cut may be missing on the replica."""
    primary = redis.Redis(port=sentinels.primary_port)
    for _ in range(20):
        primary.client_kill_filter(_type="replica")
        time.sleep(0.05)
    sentinels.primary.send_signal(signal.SIGKILL)  # writes in flight: the replay is live


@pytest.mark.timeout(400)
def test_the_primary_killed_mid_replay_the_layout_ends_exact(sentinels, deploy):
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS,
               RANKFLOW_REDIS=f"redis://127.0.0.1:{sentinels.primary_port}/0",
               RANKFLOW_REDIS_SENTINELS=",".join(f"127.0.0.1:{p}"
                                                 for p in sentinels.sentinel_ports),
               RANKFLOW_REDIS_SENTINEL_MASTER=MASTER, RANKFLOW_REDIS_SOCKET_TIMEOUT="3",
               RANKFLOW_BATCH_MAX_RECORDS="500", PYTHONUNBUFFERED="1")
    d.redis = redis.Redis(port=sentinels.primary_port, decode_responses=True)
    messages = scenario()
    expected, clock = expected_replay(messages, PERIODS)
    producer = threading.Thread(target=d.produce, args=(messages, RATE), daemon=True)
    worker = d.start_worker()
    producer.start()
    d.wait_for(lambda: int(d.meta().get("events", 0)) >= expected.counted // 3, 120,
               "a third of the replay counted")
    kill_after_cutting_the_replication_link(sentinels)
    killed_at = time.monotonic()
    watcher = redis.Redis(port=sentinels.sentinel_ports[0], decode_responses=True)
    wait_until(lambda: int(watcher.sentinel_get_master_addr_by_name(MASTER)[1])
               == sentinels.replica_port, 60, "the replica promoted")
    promoted_s = time.monotonic() - killed_at
    d.redis = redis.Redis(port=sentinels.replica_port, decode_responses=True)
    producer.join(timeout=120)
    exact_s, log_text = exact_after_failover(d, expected, clock, worker, killed_at)
    (ARTIFACTS / "redis-failover.json").write_text(json.dumps({
        "events": expected.counted, "seconds_to_promotion": round(promoted_s, 1),
        "seconds_from_kill_to_all_counted": round(exact_s, 1),
        "found_behind": "Redis is behind the state" in log_text,
    }, indent=2) + "\n")
