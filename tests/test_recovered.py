"""A partition is restored only from tables faust has read to the end (streams/recovered.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.core.topics import Topics
from streams.kafka.admin import declarations
from streams.kafka.app import create_app
from streams.kafka.recovered import tables_recovered
from streams.ops.settings import Settings

TOPICS = ["app-account-state-changelog", "app-partition-state-changelog"]


def recovery(offsets: dict[TP, int | None], highwaters: dict[TP, int],
             rebalance_waiting: bool = False, reading: bool = False,
             unapplied: int = 0) -> Any:
    signal = asyncio.Event()
    if rebalance_waiting:
        signal.set()
    return SimpleNamespace(signal_recovery_start=signal, active_tps=set(offsets),
                           active_offsets=Counter(offsets),
                           active_highwaters=Counter(highwaters), in_recovery=reading,
                           buffers={"accounts": [object()] * unapplied, "segments": []})


def tps(partition: int) -> list[TP]:
    return [TP(topic, partition) for topic in TOPICS]


def test_read_to_the_highwater_is_recovered():
    a, p = tps(3)
    assert tables_recovered(recovery({a: 41, p: 7}, {a: 41, p: 7}), TOPICS, 3)


def test_an_empty_changelog_is_recovered():
    a, p = tps(0)
    assert tables_recovered(recovery({a: None, p: -1}, {a: -1, p: -1}), TOPICS, 0)


def test_one_table_behind_is_not_recovered():
    a, p = tps(3)
    assert not tables_recovered(recovery({a: 41, p: 6}, {a: 41, p: 7}), TOPICS, 3)
    assert not tables_recovered(recovery({a: None, p: 7}, {a: 41, p: 7}), TOPICS, 3)


def test_read_to_the_highwater_but_still_reading_is_not_recovered():
    """faust counts a record read when it takes it, and applies its buffer later."""
    a, p = tps(3)
    assert not tables_recovered(recovery({a: 41, p: 7}, {a: 41, p: 7}, reading=True),
                                TOPICS, 3)
    assert not tables_recovered(recovery({a: 41, p: 7}, {a: 41, p: 7}, unapplied=5),
                                TOPICS, 3)


def test_reading_not_started_for_this_assignment_is_not_recovered():
    """on_rebalance has added the partition; highwaters are taken when reading starts."""
    a, p = tps(5)
    assert not tables_recovered(recovery({a: None, p: None}, {}), TOPICS, 5)


def test_a_partition_not_assigned_as_active_is_not_recovered():
    a, p = tps(1)
    assert not tables_recovered(recovery({a: 41, p: 7}, {a: 41, p: 7}), TOPICS, 2)


def test_nothing_is_recovered_while_a_newer_rebalance_waits():
    """faust signals the end of reading also for an assignment already replaced."""
    a, p = tps(3)
    assert not tables_recovered(recovery({a: 41, p: 7}, {a: 41, p: 7},
                                         rebalance_waiting=True), TOPICS, 3)


def test_the_consumer_holds_back_a_partition_until_its_tables_are_read():
    """Its records are not delivered, and it is sought back to the first of them."""
    app = create_app(Settings()).app
    consumer = app.consumer
    source = next(iter(app.topics.batch_topics))
    ready_tp, held_tp = TP(source, 0), TP(source, 1)
    app.topics.batch_ready = lambda tp: tp == ready_tp
    sought: list[tuple[TP, int]] = []

    async def rewind(records: Any) -> None:
        sought.extend((tp, recs[0].offset) for tp, recs in records.items())

    consumer._rewind = rewind
    records = {tp: [SimpleNamespace(offset=o) for o in range(10, 13)]
               for tp in (ready_tp, held_tp)}
    batch = asyncio.run(consumer._split(records, None, app.topics.batch_topics))
    assert list(batch) == [ready_tp]
    assert [r.offset for r in batch[ready_tp]] == [10, 11, 12]
    assert sought == [(held_tp, 10)]


def test_the_changelogs_are_declared_with_the_topics_under_fausts_names():
    """Created before faust starts: a changelog missing at the first assignment is left
    out of it, and its table is never read (a worker then holds its partitions back)."""
    settings = Settings(app_id="trial", topic_prefix="p.")
    wiring = create_app(settings)
    declared = {t.name: t for t in declarations(Topics("p.", "trial"), 8)}
    for table in (wiring.accounts, wiring.partitions):
        name = table.changelog_topic.get_topic_name()
        assert declared[name].num_partitions == 8
        assert declared[name].topic_configs == {"cleanup.policy": "compact",
                                                "min.insync.replicas": "1",
                                                "segment.bytes": str(64 * 1024 * 1024)}
