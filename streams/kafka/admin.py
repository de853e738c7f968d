"""Creates the topics of contract §1 (Input topics) and the state changelogs, co-partitioned
(idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE, Topics

log = logging.getLogger(__name__)


class TopicLayoutError(SystemExit):
    """Existing topics that cannot be co-partitioned as configured."""


#: the largest dead-letter record: a base64 envelope of a 2 MiB message fits
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


def declarations(topics: Topics, partitions: int) -> list[NewTopic]:
    """Every topic of contract §1 (Input topics), plus the internal re-keying topic and
    the tables' changelogs, co-partitioned.

    The changelogs are created here, before faust starts: faust declares them while
    its consumer joins the group, and a changelog missing at the first assignment
    is left out of it (its table would never be read). Held by
    tests/test_recovered.py::test_the_changelogs_are_declared_with_the_topics_under_fausts_names.

    The dead-letter topic takes records up to DEAD_LETTER_MAX_BYTES: an envelope
    carries the whole rejected value, which may be as large as the broker allows.
    """
    changelogs = [topics.changelog(table) for table in (ACCOUNT_TABLE, PARTITION_TABLE)]
    compacted = {"cleanup.policy": "compact"}
    configs = {topics.accounts: compacted, **dict.fromkeys(changelogs, compacted),
               topics.dlq: {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}}
    return [NewTopic(name, partitions, 1, topic_configs=configs.get(name, {}))
            for name in (*topics.sources, topics.dlq, *changelogs)]


async def create_topics(bootstrap: list[str], topics: Topics, partitions: int, *,
                        kafka_options: Mapping[str, Any] | None = None) -> list[str]:
    """Create the missing topics; returns the names created (empty when all exist).

    `kafka_options`: the client's security options (`connections.kafka_client_options`).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka_options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in declarations(topics, partitions) if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        described = await admin.describe_topics(
            [t.name for t in declarations(topics, partitions)])
        wrong = {d["topic"]: len(d["partitions"]) for d in described
                 if d.get("partitions") and len(d["partitions"]) != partitions}
        if wrong:
            raise TopicLayoutError(
                f"topics must all have RANKFLOW_PARTITIONS={partitions} partitions "
                f"(co-partitioned by account_id), but these differ: {wrong}")
        return [t.name for t in missing]
    finally:
        await admin.close()


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
