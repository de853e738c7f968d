"""Topic names (contract §1, behind RANKFLOW_TOPIC_PREFIX) and their idempotent creation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.events import EVENT_KINDS, EventKind
from streams.state import KIND_SLOTS, SLOT_ACCOUNTS, SLOT_REKEYED

log = logging.getLogger(__name__)


class TopicLayoutError(SystemExit):
    """Existing topics that cannot be co-partitioned as configured."""


#: the worker's state tables; faust names their changelog topics `{app_id}-{table}-changelog`
ACCOUNT_TABLE = "account-state"
PARTITION_TABLE = "partition-state"

#: the largest dead-letter record: a base64 envelope of a 2 MiB message fits
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names a worker reads and writes (contract §1, with the topic prefix)."""

    prefix: str = ""
    app_id: str = "rankflow"

    def event(self, kind: EventKind) -> str:
        return f"{self.prefix}events.{kind}"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}events.dlq"

    @property
    def rekeyed(self) -> str:
        return f"{self.prefix}{self.app_id}-events-rekeyed"

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    @property
    def sources(self) -> tuple[str, ...]:
        return (*(self.event(k) for k in EVENT_KINDS), self.accounts, self.rekeyed)

    def slot_of(self) -> dict[str, tuple[int, EventKind | None]]:
        slots: dict[str, tuple[int, EventKind | None]] = {
            self.event(kind): (KIND_SLOTS[kind], kind) for kind in EVENT_KINDS
        }
        slots[self.accounts] = (SLOT_ACCOUNTS, None)
        slots[self.rekeyed] = (SLOT_REKEYED, None)
        return slots

    def declarations(self, partitions: int) -> list[NewTopic]:
        """Every topic of §1, plus the internal re-keying topic and the tables'
        changelogs, co-partitioned.

        The changelogs are created here, before faust starts: faust declares them while
        its consumer joins the group, and a changelog missing at the first assignment
        is left out of it (its table would never be read).

        The dead-letter topic takes records up to DEAD_LETTER_MAX_BYTES: an envelope
        carries the whole rejected value, which may be as large as the broker allows.
        """
        changelogs = [self.changelog(table) for table in (ACCOUNT_TABLE, PARTITION_TABLE)]
        compacted = {"cleanup.policy": "compact"}
        configs = {self.accounts: compacted, **dict.fromkeys(changelogs, compacted),
                   self.dlq: {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}}
        return [NewTopic(name, partitions, 1, topic_configs=configs.get(name, {}))
                for name in (*self.sources, self.dlq, *changelogs)]


async def create_topics(bootstrap: list[str], topics: Topics, partitions: int, *,
                        kafka_options: Mapping[str, Any] | None = None) -> list[str]:
    """Create the missing topics; returns the names created (empty when all exist).

    `kafka_options`: the client's security options (`connections.kafka_client_options`).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka_options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.declarations(partitions) if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        described = await admin.describe_topics(
            [t.name for t in topics.declarations(partitions)])
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
