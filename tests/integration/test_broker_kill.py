"""A broker killed mid-replay: on a replicated cluster the worker rides it out, exact.

The test starts a three-broker KRaft cluster and a Redis of its own (`rankflow dev up
--brokers 3` on other ports and another cache folder; the shared stack is not touched).
Topics get the cluster's defaults: replication factor 3, min.insync.replicas 2. A worker
(the real `rankflow worker` process) replays an event-clock scenario; in the middle the
broker that leads the most partitions of the input topics is SIGKILLed (its pid from
`rankflow dev status --json`), and started again some seconds later with `rankflow dev
up --brokers 3`. The final Redis layout must equal the brute-force reference key by
key, and no partition may stall: every input partition's committed offset reaches its
end offset. `rankflow dev down` at the end stops the whole cluster.

The worker must count events again while the broker is still down (two of three replicas
stay in sync). Writes tests/artifacts/broker-kill.json: the killed broker, the partitions
it led, the events counted at the kill and while it was down, and the durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

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
from tests.integration.test_outages import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.brokers]

EVENTS = 20_000
PARTITIONS = 6
BROKERS = 3


def free_cluster_ports(start: int) -> int:
    """A base port whose three brokers (every 100th port) and their controllers (+1) are
    all free."""
    for base in range(start, start + 10_000, 1000):
        wanted = [base + 100 * n + k for n in range(BROKERS) for k in (0, 1)]
        sockets = []
        try:
            for port in wanted:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free ports for a cluster")


def rankflow(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-m", "streams.ops.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"rankflow {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment of a three-broker cluster and a Redis of the test's own."""
    base = free_cluster_ports(19092)
    (redis_port,) = free_ports(1, 16379)
    bootstrap = ",".join(f"127.0.0.1:{base + 100 * n}" for n in range(BROKERS))
    env = {**os.environ, "RANKFLOW_KAFKA": bootstrap,
           "RANKFLOW_REDIS": f"redis://127.0.0.1:{redis_port}/0",
           "RANKFLOW_CACHE_DIR": str(tmp_path_factory.mktemp("brokers-stack"))}
    try:
        rankflow(env, "dev", "up", "--brokers", str(BROKERS))
        yield env
    finally:
        rankflow(env, "dev", "down")


def pids(env: dict[str, str]) -> dict[int, int | None]:
    """Broker node id -> pid, from `rankflow dev status --json`."""
    status = json.loads(rankflow(env, "dev", "status", "--json"))
    return {p["id"]: p["pid"] for p in status["processes"] if p["role"] == "kafka"}


async def describe_layout(bootstrap: list[str], names: list[str]) -> dict[str, Any]:
    """topic -> (replicas per partition, min.insync.replicas, leader per partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, {"min.insync.replicas": None})
             for n in names])
    finally:
        await admin.close()
    insync = {res[3]: entry[1] for r in responses for res in r.resources for entry in res[4]
              if entry[0] == "min.insync.replicas"}
    return {d["topic"]: ({len(p["replicas"]) for p in d["partitions"]}, insync.get(d["topic"]),
                         [p["leader"] for p in d["partitions"]]) for d in described}


async def committed(bootstrap: list[str], group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def stalled(d: Deployment) -> dict[str, list[int]]:
    """Input partitions whose committed offset is short of their end: [committed, end]."""
    bootstrap = d.settings.bootstrap_servers
    done = asyncio.run(committed(bootstrap, d.settings.app_id))
    short = {}
    for topic in d.topics.sources:
        for partition, end in asyncio.run(end_offsets(bootstrap, topic)).items():
            if done.get((topic, partition), 0) < end:
                short[f"{topic}:{partition}"] = [done.get((topic, partition), 0), end]
    return short


@pytest.mark.timeout(300)
def test_the_broker_leading_most_input_partitions_is_killed_mid_replay_and_all_ends_exact(
        cluster):
    started = time.monotonic()
    messages = scenario(EVENTS, seed=41)
    expected, clock = expected_replay(messages)
    settings = Settings(kafka=cluster["RANKFLOW_KAFKA"], redis=cluster["RANKFLOW_REDIS"])
    d = Deployment(settings, f"k{uuid.uuid4().hex[:10]}", {
        "RANKFLOW_KAFKA": cluster["RANKFLOW_KAFKA"], "RANKFLOW_REDIS": cluster["RANKFLOW_REDIS"],
        "RANKFLOW_CLOCK": "event", "RANKFLOW_PERIODS": PERIODS,
        "RANKFLOW_PARTITIONS": str(PARTITIONS), "RANKFLOW_BATCH_MAX_RECORDS": "200",
        "PYTHONUNBUFFERED": "1"})
    bootstrap = d.settings.bootstrap_servers
    report: dict[str, Any] = {"events": expected.counted, "dead_letters": expected.dead}
    try:
        names = [*d.topics.sources, d.topics.dlq, f"{d.name}-account-state-changelog",
                 f"{d.name}-partition-state-changelog"]
        found = asyncio.run(describe_layout(bootstrap, names))
        for _ in range(20):  # the broker asked may not know the new topics' configs yet
            if all(i is not None for _, i, _ in found.values()):
                break
            time.sleep(0.5)
            found = asyncio.run(describe_layout(bootstrap, names))
        assert {n: (r, i) for n, (r, i, _) in found.items()} == dict.fromkeys(
            names, ({3}, "2")), "the cluster's defaults: RF 3, min.insync.replicas 2"
        # chosen before the replay, so that the kill lands early in it (no broker moves
        # a leadership meanwhile)
        leaders = Counter(leader for topic in d.topics.sources for leader in found[topic][2])
        victim, led = leaders.most_common(1)[0]
        pid = pids(cluster)[victim]
        assert pid is not None
        d.produce(messages)
        worker = d.start_worker()
        log_path = ARTIFACTS / f"{d.name}-worker0.log"
        total = expected.counted
        d.wait_for(lambda: int(d.meta().get("events", 0)) >= total // 5, 120,
                   "a fifth of the events counted")
        os.kill(pid, signal.SIGKILL)
        killed_at = int(d.meta().get("events", 0))
        report.update(killed_broker=victim, input_partitions_it_led=led,
                      events_counted_at_kill=killed_at,
                      seconds_to_kill=round(time.monotonic() - started, 1))
        killed = time.monotonic()
        assert killed_at < total, "the broker was killed after the end of the replay"
        # two replicas of three are in sync: the worker goes on without the dead broker
        # once its leaderships have moved (past the brokers' 6 s session timeout)
        d.wait_for(lambda: int(d.meta().get("events", 0)) > killed_at + 500, 60,
                   "events counted again while the broker is down")
        report["seconds_until_counting_again"] = round(time.monotonic() - killed, 1)
        time.sleep(3)
        assert worker.poll() is None, "the worker exited while a broker was down"
        report["events_counted_while_down"] = int(d.meta().get("events", 0)) - killed_at
        restart = time.monotonic()
        rankflow(cluster, "dev", "up", "--brokers", str(BROKERS))
        report["restart_seconds"] = round(time.monotonic() - restart, 1)
        assert pids(cluster)[victim] not in (None, pid)
        try:
            d.wait_counted(expected.counted, expected.dead, timeout=180)
            d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
            d.wait_for(lambda: not stalled(d), 60, "every input partition committed to its end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stalled: {stalled(d)}; "
                                 f"{stack_dump(worker, log_path)}") from exc
        got = contract_keys(layout(d.redis, d.prefix))
        want = expected_layout(expected, clock)
        diff = compare(got, want)
        report.update(differing_keys=len(diff.keys), lost=diff.lost,
                      double_counted=diff.double_counted,
                      seconds=round(time.monotonic() - started, 1))
        assert diff.keys == [], describe(got, want, diff.keys)
        assert diff.exact
        assert worker.poll() is None
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        Path(ARTIFACTS / "broker-kill.json").write_text(json.dumps(report, indent=2) + "\n")
        d.close()
