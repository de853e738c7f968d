"""Creates the topics of contract §1 (Input topics) and the state changelogs, co-partitioned
(idempotent)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE, Topics

log = logging.getLogger(__name__)


class TopicLayoutError(SystemExit):
    """Existing topics that cannot be co-partitioned as configured."""


#: the largest dead-letter record: a base64 envelope of a 2 MiB message fits
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024
#: a changelog segment's size: compaction cleans closed segments only, so a recovery
#: reads at most this much of every record an account had (Kafka's default, 1 GiB, left
#: a million accounts' changelogs uncompacted: docs/performance.md)
CHANGELOG_SEGMENT_BYTES = 64 * 1024 * 1024
#: describes of the topics, DESCRIBE_PAUSE seconds apart, until every broker knows them
DESCRIBE_TRIES = 20
DESCRIBE_PAUSE = 0.5
#: brokers from which a replicated layout (RF 3, min.insync.replicas 2) is the default
REPLICATED_CLUSTER = 3


@dataclass(frozen=True)
class Replication:
    """Replicas per partition and `min.insync.replicas` of the topics rankflow creates."""

    factor: int = 1
    min_insync: int = 1


#: one replica: a single dev broker's layout (and the wiring's default, with no cluster)
SINGLE_REPLICA = Replication(1, 1)


def replication_for(brokers: int, factor: int | None = None,
                    min_insync: int | None = None) -> Replication:
    """The replication of a cluster of `brokers`: the settings where given, else RF 3 and
    min.insync.replicas 2 from three brokers on, RF 1 below (tests/test_admin.py)."""
    chosen = factor if factor is not None else (3 if brokers >= REPLICATED_CLUSTER else 1)
    if chosen > brokers:
        raise TopicLayoutError(f"RANKFLOW_REPLICATION_FACTOR={chosen} needs {chosen} brokers; "
                               f"the cluster has {brokers}")
    insync = min_insync if min_insync is not None else (2 if chosen >= 3 else 1)
    if insync > chosen:
        raise TopicLayoutError(f"RANKFLOW_MIN_INSYNC_REPLICAS={insync} exceeds the replication "
                               f"factor {chosen}: no write could succeed")
    return Replication(chosen, insync)


def declarations(topics: Topics, partitions: int,
                 replication: Replication = SINGLE_REPLICA) -> list[NewTopic]:
    """Every topic of contract §1 (Input topics), plus the internal re-keying topic and
    the tables' changelogs, co-partitioned, with `replication`.

    The changelogs are created here, before faust starts: faust declares them while
    its consumer joins the group, and a changelog missing at the first assignment
    is left out of it (its table would never be read). Held by
    tests/test_recovered.py::test_the_changelogs_are_declared_with_the_topics_under_fausts_names.

    The dead-letter topic takes records up to DEAD_LETTER_MAX_BYTES: an envelope
    carries the whole rejected value, which may be as large as the broker allows.
    """
    changelogs = changelog_names(topics)
    insync = {"min.insync.replicas": str(replication.min_insync)}
    compacted = {"cleanup.policy": "compact", **insync}
    changelog = {**compacted, "segment.bytes": str(CHANGELOG_SEGMENT_BYTES)}
    configs = {topics.accounts: compacted, **dict.fromkeys(changelogs, changelog),
               topics.dlq: {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES), **insync}}
    return [NewTopic(name, partitions, replication.factor,
                     topic_configs=configs.get(name, insync))
            for name in (*topics.sources, topics.dlq, *changelogs)]


def changelog_names(topics: Topics) -> list[str]:
    return [topics.changelog(table) for table in (ACCOUNT_TABLE, PARTITION_TABLE)]


@dataclass(frozen=True)
class FoundTopic:
    """What the broker says of an existing topic."""

    partitions: int
    #: the fewest replicas of any of its partitions
    replicas: int
    #: None while the broker asked does not know the topic's configuration yet
    cleanup_policy: str | None = "delete"


def layout_problems(found: Mapping[str, FoundTopic], topics: Topics,
                    partitions: int) -> list[str]:
    """Why these topics cannot hold rankflow's state, one line per topic and problem
    naming both; empty when they can (tests/test_admin.py,
    tests/integration/test_topic_layout.py)."""
    problems = []
    sources = Counter(found[name].partitions for name in topics.sources if name in found)
    input_partitions = sources.most_common(1)[0][0] if sources else partitions
    changelogs = changelog_names(topics)
    for name in (*topics.sources, topics.dlq, *changelogs):
        topic = found.get(name)
        if topic is None:
            continue
        if name in changelogs and topic.partitions != input_partitions:
            problems.append(f"{name}: {topic.partitions} partitions, the input topics have "
                            f"{input_partitions}: a partition's state must live on the "
                            f"partition of its events")
        elif topic.partitions != partitions:
            problems.append(f"{name}: {topic.partitions} partitions, RANKFLOW_PARTITIONS="
                            f"{partitions} (the topics are co-partitioned by account_id)")
        if (name in changelogs and topic.cleanup_policy is not None
                and "compact" not in topic.cleanup_policy.split(",")):
            problems.append(f"{name}: cleanup.policy={topic.cleanup_policy}, a changelog "
                            f"must be compacted (cleanup.policy=compact) or the state in "
                            f"its old segments is deleted")
    return problems


def under_replicated(found: Mapping[str, FoundTopic], replication: Replication) -> list[str]:
    """Existing topics with fewer replicas than configured (warned of: raising a topic's
    replication factor is a partition reassignment, an operator's job)."""
    return [f"{name}: {topic.replicas} replica(s), RANKFLOW_REPLICATION_FACTOR="
            f"{replication.factor}" for name, topic in sorted(found.items())
            if topic.replicas < replication.factor]


@dataclass(frozen=True)
class EnsuredTopics:
    created: list[str]
    replication: Replication


async def ensure_topics(bootstrap: list[str], topics: Topics, partitions: int, *,
                        replication_factor: int | None = None,
                        min_insync_replicas: int | None = None,
                        kafka_options: Mapping[str, Any] | None = None) -> EnsuredTopics:
    """Create the missing topics with the cluster's replication (`replication_for`), then
    refuse a layout that cannot hold the state (`layout_problems`).

    `kafka_options`: the client's security options (`connections.kafka_client_options`).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka_options or {}))
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        replication = replication_for(len(cluster["brokers"]), replication_factor,
                                      min_insync_replicas)
        declared = declarations(topics, partitions, replication)
        existing = set(await admin.list_topics())
        missing = [t for t in declared if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        found = await _found_topics(admin, [t.name for t in declared])
        for _ in range(DESCRIBE_TRIES):
            # the broker asked may not know a just-created topic yet (another one does)
            if len(found) == len(declared) and all(
                    t.cleanup_policy is not None for t in found.values()):
                break
            await asyncio.sleep(DESCRIBE_PAUSE)
            found = await _found_topics(admin, [t.name for t in declared])
        problems = layout_problems(found, topics, partitions)
        if problems:
            raise TopicLayoutError("the topics cannot hold rankflow's state:\n  "
                                   + "\n  ".join(problems))
        for line in under_replicated(found, replication):
            log.warning("under-replicated topic %s", line)
        return EnsuredTopics([t.name for t in missing], replication)
    finally:
        await admin.close()


async def create_topics(bootstrap: list[str], topics: Topics, partitions: int, *,
                        kafka_options: Mapping[str, Any] | None = None) -> list[str]:
    """`ensure_topics` with the default replication; the names created."""
    ensured = await ensure_topics(bootstrap, topics, partitions, kafka_options=kafka_options)
    return ensured.created


async def _found_topics(admin: AIOKafkaAdminClient,
                        names: Sequence[str]) -> dict[str, FoundTopic]:
    described = [d for d in await admin.describe_topics(list(names)) if d.get("partitions")]
    policies = _cleanup_policies(await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, d["topic"], {"cleanup.policy": None})
         for d in described]))
    return {d["topic"]: FoundTopic(len(d["partitions"]),
                                   min(len(p["replicas"]) for p in d["partitions"]),
                                   policies.get(d["topic"]))
            for d in described}


def _cleanup_policies(responses: Sequence[Any]) -> dict[str, str]:
    """topic -> cleanup.policy, from DescribeConfigs responses."""
    policies = {}
    for response in responses:
        for error, _message, _kind, name, entries, *_ in response.resources:
            if error:  # not known to that broker yet: left None
                continue
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    policies[name] = entry[1]
    return policies


async def delete_topics(bootstrap: list[str], name: str, *,
                        kafka_options: Mapping[str, Any] | None = None) -> list[str]:
    """Delete one deployment's topics: those of its topic prefix (`{name}.`) and faust's
    own (`{name}-...`, changelog and assignor). Returns the names deleted.

    For short-lived deployments (tests, benchmarks): a broker that keeps every topic
    they ever made grows by thousands of partitions a run and starts ever slower.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka_options or {}))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics()
                 if t.startswith((f"{name}.", f"{name}-"))]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
