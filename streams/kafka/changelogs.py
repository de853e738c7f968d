"""Reads a compacted topic's newest value per key, from the beginning, with no consumer
group (the workers are not disturbed): what `rankflow rebuild` restores state from."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from streams.ops.connections import kafka_client_options
from streams.ops.settings import Settings

log = logging.getLogger(__name__)


async def read_latest(settings: Settings, topic: str, progress: bool,
                      supersedes: Callable[[bytes, bytes], bool] | None = None,
                      ) -> dict[bytes, bytes]:
    """The newest value of every key of a compacted topic (tombstones drop the key).

    `supersedes(current, incoming)`: whether a later value replaces the one kept (by
    default, always)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                **kafka_client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code") or not described.get("partitions"):
        log.warning("no state topic %s: nothing to rebuild from", topic)
        return {}
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest",
                                **kafka_client_options(settings))
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        with tqdm(total=sum(ends.values()), unit="record", disable=not progress,
                  desc=topic) as bar:
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        if record.key is None:
                            continue
                        if record.value is None:
                            latest.pop(record.key, None)
                        elif (supersedes is None or record.key not in latest
                              or supersedes(latest[record.key], record.value)):
                            latest[record.key] = record.value
                    bar.update(len(records))
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return latest
    finally:
        await consumer.stop()
