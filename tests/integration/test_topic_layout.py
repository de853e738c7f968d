"""The topic layout on the real broker: `rankflow topics` creates compacted changelogs with
the cluster's replication, and it and the worker refuse a layout that cannot hold the
state, naming the topic and the problem (the pure rules: tests/test_admin.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE, Topics
from streams.kafka.admin import delete_topics
from streams.ops.settings import Settings

PARTITIONS = 4


class Named:
    """One deployment's names and environment, its topics deleted at the end."""

    def __init__(self, settings: Settings) -> None:
        self.name = f"l{uuid.uuid4().hex[:10]}"
        self.bootstrap = settings.bootstrap_servers
        self.topics = Topics(f"{self.name}.", self.name)
        self.changelogs = [self.topics.changelog(t) for t in (ACCOUNT_TABLE, PARTITION_TABLE)]
        self.env = {**os.environ, "RANKFLOW_KAFKA": settings.kafka,
                    "RANKFLOW_REDIS": settings.redis, "RANKFLOW_TOPIC_PREFIX": f"{self.name}.",
                    "RANKFLOW_APP_ID": self.name, "RANKFLOW_PREFIX": f"{self.name}:",
                    "RANKFLOW_PARTITIONS": str(PARTITIONS)}

    def rankflow(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.ops.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def named(stack: Settings) -> Iterator[Named]:
    deployment = Named(stack)
    yield deployment
    asyncio.run(delete_topics(deployment.bootstrap, deployment.name))


async def _admin_call(bootstrap: list[str], call: Any) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


def create(named: Named, topic: str, partitions: int, configs: dict[str, str]) -> None:
    asyncio.run(_admin_call(named.bootstrap, lambda admin: admin.create_topics(
        [NewTopic(topic, partitions, 1, topic_configs=configs)])))


def configs_of(named: Named, names: list[str]) -> dict[str, dict[str, str]]:
    wanted = {"cleanup.policy": None, "min.insync.replicas": None}
    responses = asyncio.run(_admin_call(named.bootstrap, lambda admin: admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n, dict(wanted)) for n in names])))
    return {res[3]: {e[0]: e[1] for e in res[4]} for r in responses for res in r.resources}


def test_topics_creates_compacted_changelogs_with_the_clusters_replication(named):
    done = named.rankflow("topics")
    assert done.returncode == 0, done.stderr
    # the shared dev stack has one broker: replication factor 1, min.insync.replicas 1
    assert "with replication factor 1, min.insync.replicas 1" in done.stdout
    names = [*named.topics.sources, named.topics.dlq, *named.changelogs]
    described = asyncio.run(_admin_call(named.bootstrap,
                                        lambda admin: admin.describe_topics(names)))
    assert {d["topic"]: len(d["partitions"]) for d in described} == dict.fromkeys(
        names, PARTITIONS)
    configs = configs_of(named, names)
    for changelog in named.changelogs:
        assert configs[changelog] == {"cleanup.policy": "compact", "min.insync.replicas": "1"}
    assert configs[named.topics.event("view")]["cleanup.policy"] == "delete"
    again = named.rankflow("topics")
    assert (again.returncode, again.stdout.strip()) == (0, "all topics exist")


def test_topics_refuses_a_changelog_that_is_not_compacted(named):
    changelog = named.changelogs[0]
    create(named, changelog, PARTITIONS, {"cleanup.policy": "delete"})
    done = named.rankflow("topics")
    assert done.returncode != 0
    assert (f"{changelog}: cleanup.policy=delete, a changelog must be compacted "
            f"(cleanup.policy=compact)") in done.stderr


def test_the_worker_refuses_state_partitioned_unlike_the_input_topics(named):
    changelog = named.changelogs[1]
    create(named, changelog, 2, {"cleanup.policy": "compact"})
    done = named.rankflow("worker", timeout=120)
    assert done.returncode != 0
    assert (f"{changelog}: 2 partitions, the input topics have {PARTITIONS}: a partition's "
            f"state must live on the partition of its events") in done.stderr
    assert "Traceback" not in done.stderr
