"""A Redis Cluster failover under a running worker: the primary holding `rf:meta` is
SIGKILLed while a live replay writes, its replica takes over (cluster-node-timeout 2 s),
and the layout ends exact.

Runs on the dev stack's cluster (dev up --redis-cluster); the killed node is started
again afterwards by `dev up`, and rejoins as a replica. Replication is asynchronous, so
a promoted replica may miss writes the primary acknowledged: the test makes it certain,
its replica stopped (SIGSTOP) and its replication link cut (else the kernel would buffer
the stream for it) while the primary acknowledges more writes to `rf:meta`, then the
primary killed and the replica let go on. The worker finds the shard behind by
its stamps (streams/sink/cluster.py, lua/stamp.lua) and rewrites those partitions; the
scripts are loaded again on the promoted node, which lacks them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.cluster

from streams.dev.devstack import DevStack
from streams.ops.settings import Settings
from tests.integration.conftest import ARTIFACTS
from tests.integration.exactness import expected_replay
from tests.integration.test_event_clock import PERIODS, exact_after_failover, scenario
from tests.integration.test_redis_sentinel import wait_until

RATE = 1_000.0  # events/s: a live replay of about 20 s


@pytest.fixture
def dev_cluster(redis_cluster: Settings) -> Iterator[DevStack]:
    """The dev stack's cluster; whatever node a test killed is started again after."""
    dev = DevStack(redis_cluster, redis_cluster=True)
    yield dev
    dev.up()


def primary_of(key: str, port: int) -> int:
    """The port of the primary serving `key`'s slot, as the node on `port` sees it."""
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=port)
    try:
        return int(client.get_node_from_key(key).port)
    finally:
        client.close()


def replica_of(port: int) -> int:
    """The port of the replica of the primary on `port`."""
    node = redis.Redis(port=port, decode_responses=True)
    myself = node.execute_command("CLUSTER", "MYID")
    (line,) = node.execute_command("CLUSTER", "REPLICAS", myself)
    return int(line.split()[1].split("@")[0].rpartition(":")[2])


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.mark.timeout(300)
def test_a_primary_killed_mid_replay_its_replica_promoted_the_layout_ends_exact(
        cluster_deploy, dev_cluster):
    d = cluster_deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS,
                       RANKFLOW_REDIS_SOCKET_TIMEOUT="3", RANKFLOW_BATCH_MAX_RECORDS="500",
                       PYTHONUNBUFFERED="1")
    messages = scenario()
    expected, clock = expected_replay(messages, PERIODS)
    meta_key = f"{d.prefix}meta"
    victim = primary_of(meta_key, dev_cluster.cluster_nodes[0].port)
    nodes = {p.port: p for p in dev_cluster.recorded()
             if p.role == "redis-cluster" and p.alive()}
    process, replica = nodes[victim], nodes[replica_of(victim)]
    survivor = next(e.port for e in dev_cluster.cluster_nodes if e.port != victim)

    producer = threading.Thread(target=d.produce, args=(messages, RATE), daemon=True)
    worker = d.start_worker()
    producer.start()
    d.wait_for(lambda: int(d.meta().get("events", 0)) >= expected.counted // 3, 120,
               "a third of the replay counted")
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        redis.Redis(port=victim).client_kill_filter(_type="replica")
        missed = int(d.meta()["events"])
        d.wait_for(lambda: int(d.meta()["events"]) > missed, 60,
                   "writes the stopped replica misses")
        at_kill = int(d.meta()["events"])
        os.kill(process.pid, signal.SIGKILL)  # writes in flight: the replay is live
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    killed_at = time.monotonic()
    wait_until(lambda: not _answers(victim) and primary_of(meta_key, survivor) != victim,
               60, "a replica promoted in place of the killed primary")
    promoted_s = time.monotonic() - killed_at
    producer.join(timeout=120)
    exact_s, log_text = exact_after_failover(d, expected, clock, worker, killed_at)
    assert "Redis is behind the state for partitions" in log_text
    (ARTIFACTS / "redis-cluster-failover.json").write_text(json.dumps({
        "events": expected.counted, "killed_primary_port": victim,
        "seconds_to_promotion": round(promoted_s, 1),
        "seconds_from_kill_to_all_counted": round(exact_s, 1),
        "events_acknowledged_past_the_replica": at_kill - missed,
    }, indent=2) + "\n")
    # dev up starts the killed node again; it rejoins the cluster (as a replica)
    assert any(line.startswith(f"redis-cluster {process.id}: started")
               for line in dev_cluster.up())
    listed = [p for p in dev_cluster.processes() if p["role"] == "redis-cluster"]
    assert len(listed) == 6 and all(p["pid"] is not None for p in listed)
