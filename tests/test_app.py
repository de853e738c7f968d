"""The faust wiring: rankflow's extension points are the ones in use."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from streams.kafka.app import create_app
from streams.kafka.transport import (
    FETCH_MAX_WAIT_MS,
    BatchConductor,
    BatchConsumer,
    BatchConsumerThread,
    _joined,
)
from streams.ops.settings import Settings


def test_the_app_uses_the_batch_transport():
    app = create_app(Settings()).app
    assert isinstance(app.topics, BatchConductor)
    assert app.transport.Consumer is BatchConsumer


def test_the_worker_consumer_fetches_with_a_short_wait():
    """faust's 1,500 ms fetch wait held busy partitions behind fetches of idle ones."""
    consumer = create_app(Settings()).app.consumer
    thread = consumer._thread
    assert isinstance(thread, BatchConsumerThread)

    async def created() -> int:
        worker_consumer = thread._create_worker_consumer(consumer.transport)
        return worker_consumer._fetch_max_wait_ms

    assert asyncio.run(created()) == FETCH_MAX_WAIT_MS == 100


def test_a_batch_is_catching_up_while_more_waits_than_it_held():
    """Catching up, the next batch overlaps this one's writes; live, the writes go first."""
    app = create_app(Settings()).app
    consumer = app.consumer
    source = next(iter(app.topics.batch_topics))
    a, b = TP(source, 0), TP(source, 1)
    batch = {a: [SimpleNamespace(offset=o) for o in range(100, 110)],
             b: [SimpleNamespace(offset=o) for o in range(0, 10)]}
    highwaters = {a: 110, b: 10}
    consumer.highwater = highwaters.__getitem__
    assert not consumer._catching_up(batch)  # read to the end
    highwaters[b] = 30  # 20 left, 20 held
    assert not consumer._catching_up(batch)
    highwaters[a] = 111
    assert consumer._catching_up(batch)


def test_a_partition_without_a_highwater_counts_as_read_to_the_end():
    app = create_app(Settings()).app
    consumer = app.consumer
    tp = TP(next(iter(app.topics.batch_topics)), 0)

    def unknown(tp: TP) -> int:
        raise AssertionError("not assigned")

    consumer.highwater = unknown
    assert not consumer._catching_up({tp: [SimpleNamespace(offset=5)]})


def test_records_dropped_undelivered_are_fetched_again():
    """A rebalance stopped the flow after the fetch: each partition is sought back to the
    records, unless a seek moved it since (then its position is elsewhere)."""
    app = create_app(Settings()).app
    consumer = app.consumer
    source = TP(next(iter(app.topics.batch_topics)), 0)
    kept, moved, gone = (TP("app-account-state-changelog", p) for p in range(3))
    positions = {source: 13, kept: 13, moved: 99}
    sought: list[tuple[TP, int]] = []

    class Kafka:
        async def position(self, tp: TP) -> int:
            if tp not in positions:
                raise IllegalStateError("not assigned")
            return positions[tp]

        def seek(self, tp: TP, offset: int) -> None:
            sought.append((tp, offset))

    class Thread:
        def _ensure_consumer(self) -> Kafka:
            return Kafka()

        async def call_thread(self, fun: Any, *args: Any) -> Any:
            return await fun(*args)

    consumer._thread = Thread()
    records = {tp: [SimpleNamespace(offset=o) for o in range(10, 13)]
               for tp in (source, kept, moved, gone)}
    asyncio.run(consumer._rewind(records))
    assert sought == [(source, 10), (kept, 10)]
    assert consumer._read_offset[source] == consumer._read_offset[kept] == 10


class FakeFetches:
    """Stands in for faust's `_wait_next_records`: the given fetches, in turn, each
    taking `seconds`; `between` runs after the first (a rebalance, say)."""

    def __init__(self, consumer: Any, fetches: list[dict[TP, list[Any]]],
                 seconds: float = 0.0, between: Any = None) -> None:
        self.consumer, self.fetches = consumer, fetches
        self.seconds, self.between = seconds, between
        self.calls = 0

    async def __call__(self, timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        if self.calls == 1 and self.between is not None:
            self.between()
        fetched = self.fetches[self.calls]
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return fetched, set(fetched)


def offsets(start: int, stop: int) -> list[Any]:
    return [SimpleNamespace(offset=o) for o in range(start, stop)]


def refresh_setup(fetches: list[dict[TP, list[Any]]], seconds: float = 0.0,
                  between: Any = None) -> tuple[Any, FakeFetches, dict[TP, int]]:
    app = create_app(Settings()).app
    consumer = app.consumer
    highwaters: dict[TP, int] = {}
    consumer.highwater = lambda tp: highwaters.get(tp, 0)
    fake = FakeFetches(consumer, fetches, seconds, between)
    consumer._wait_next_records = fake
    consumer._took -= 1.0  # the last batch ran a second
    return consumer, fake, highwaters


def test_records_that_waited_through_a_long_batch_take_what_arrived_since():
    """aiokafka fetches a partition again only once its buffer is taken: records buffered
    while a long batch ran were fetched as it started. A second fetch adds the rest."""
    source = TP("events.view", 0)
    other = TP("events.view", 1)
    consumer, fake, highwaters = refresh_setup(
        [{source: offsets(10, 13)}, {source: offsets(13, 20), other: offsets(0, 2)}])
    highwaters[source] = 13  # all there was when the first fetch ran
    records, active = asyncio.run(consumer._fetch())
    assert fake.calls == 2
    assert {tp: [r.offset for r in recs] for tp, recs in records.items()} == {
        source: list(range(10, 20)), other: [0, 1]}
    assert active == {source, other}


def test_fresh_records_and_a_backlog_are_not_fetched_twice():
    source = TP("events.view", 0)
    waited, _, highwaters = refresh_setup([{source: offsets(10, 13)}, {}], seconds=0.1)
    highwaters[source] = 13
    asyncio.run(waited._fetch())  # they arrived while the fetch waited: fresh
    assert waited._wait_next_records.calls == 1
    behind, _, highwaters = refresh_setup([{source: offsets(10, 13)}, {}])
    highwaters[source] = 500  # catching up: the buffer holds the next batch anyway
    asyncio.run(behind._fetch())
    assert behind._wait_next_records.calls == 1


def test_a_rebalance_between_the_two_fetches_rewinds_both_and_delivers_nothing():
    source = TP("events.view", 0)
    rewound: list[dict[TP, list[Any]]] = []
    consumer, _, highwaters = refresh_setup(
        [{source: offsets(10, 13)}, {source: offsets(0, 5)}],
        between=lambda: setattr(consumer.app, "consumer_generation_id",
                                consumer.app.consumer_generation_id + 1))
    highwaters[source] = 13

    async def rewind(records: dict[TP, list[Any]]) -> None:
        rewound.append(records)

    consumer._rewind = rewind
    records, _ = asyncio.run(consumer._fetch())
    assert records == {}
    assert [[r.offset for r in batch[source]] for batch in rewound] == [
        [0, 1, 2, 3, 4], [10, 11, 12]]


def test_joined_fetches_never_repeat_a_record():
    a, b = TP("events.view", 0), TP("events.like", 0)
    joined = _joined({a: offsets(10, 13)}, {a: offsets(12, 15), b: offsets(7, 8)})
    assert {tp: [r.offset for r in recs] for tp, recs in joined.items()} == {
        a: [10, 11, 12, 13, 14], b: [7]}


def _producer_settings(app: Any) -> dict[str, Any]:
    producer = app.producer
    return {**producer._settings_default(), **producer._settings_extra()}


def test_the_producer_is_idempotent_with_acks_all():
    """Dead letters, re-keyed copies and changelog records: a send retried after a lost
    ack (a broker killed mid-write) is not written twice."""
    settings = _producer_settings(create_app(Settings()).app)
    assert settings["acks"] == "all" and settings["enable_idempotence"] is True
    plain = _producer_settings(create_app(Settings(kafka_acks="1")).app)
    assert plain["acks"] == 1 and "enable_idempotence" not in plain


def test_the_changelogs_take_the_clusters_replication():
    from streams.kafka.admin import Replication

    wiring = create_app(Settings(), Replication(factor=3, min_insync=2))
    assert wiring.app.conf.topic_replication_factor == 3
    for table in (wiring.accounts, wiring.partitions):
        topic = table.changelog_topic
        assert topic.replicas is None  # so faust declares it with topic_replication_factor
        assert topic.config["min.insync.replicas"] == "2"
        assert topic.compacting


def test_the_account_table_assembles_accounts_from_their_parts():
    """faust reads a changelog into the table; an account written in parts lands whole."""
    from streams.core.state import AccountState
    from streams.core.windows import Windows, bucket_floors

    now = 1_767_225_600_000
    state = AccountState("busy", 1)
    for i in range(9_000):
        campaign = f"campaign-{i:05d}".ljust(64, "x")
        state.add("view", 1, now, Windows().fixed_containing(now), campaign, bucket_floors(now))
    records = state.records(now)
    assert len(records) > 1
    table = create_app(Settings()).accounts
    codec = table.changelog_topic.value_serializer  # the codec faust decodes with
    assert codec == "rankflow-account"
    from faust.serializers import codecs

    events = [SimpleNamespace(key=key, value=codecs.loads(codec, value),
                              message=SimpleNamespace(value=value, partition=1))
              for key, value in records]
    table.apply_changelog_batch(events[:2])  # faust applies in buffers of any size
    table.apply_changelog_batch(events[2:])
    assert dict(table.data) == {"busy": state}


def test_the_account_table_keeps_the_newer_state_and_marks_an_account_overtaken():
    """A stalled worker's record (an older owner epoch) sent after the new owner's is not
    applied, and its account is marked for the owner to write again; a newer record
    unmarks it."""
    from faust.serializers import codecs

    from streams.core.state import AccountState

    def record(follows: int, epoch: int):
        state = AccountState("acct", 1, follows=follows, epoch=epoch)
        (key, value), = state.records(0)
        return SimpleNamespace(key=key, value=codecs.loads("rankflow-account", value),
                               message=SimpleNamespace(value=value, partition=1))

    table = create_app(Settings()).accounts
    table.apply_changelog_batch([record(5, 3), record(9, 2)])
    assert table.data["acct"].follows == 5
    assert table.overtaken.keys == {"acct"}
    assert table.take_overtaken({2}) == []
    assert [s.follows for s in table.take_overtaken({1})] == [5]
    assert table.overtaken.keys == set()
    table.apply_changelog_batch([record(9, 2), record(4, 3)])
    assert table.data["acct"].follows == 4 and table.overtaken.keys == set()


def test_the_partition_table_keeps_the_newer_series_chunk():
    from faust.serializers import codecs

    from streams.core.series import ChunkRecord, encode_chunk

    def record(views: int, epoch: int):
        value = encode_chunk(ChunkRecord(1, "spring", 0, 600, {600: [views, 0, 0]},
                                         [40, -1, -1, -1, -1, -1], epoch))
        return SimpleNamespace(key="1:series:spring:1m:600",
                               value=codecs.loads("rankflow-segment", value),
                               message=SimpleNamespace(value=value, partition=1))

    table = create_app(Settings()).partitions
    table.apply_changelog_batch([record(9, 3), record(5, 2)])
    assert table.data["1:series:spring:1m:600"].cells == {600: [9, 0, 0]}
    assert [c.cells for c in table.take_overtaken({1})] == [{600: [9, 0, 0]}]
    assert table.overtaken.keys == set()


def test_recovery_gets_only_records_it_reads_now():
    """Records fetched before a rebalance reach the queue after it: faust's recovery
    would apply one of a revoked partition to the previous record's table and count its
    offset as read, so the partition, assigned again later, would be read from past its
    first records. The table manager's queue hands over only records fetched in this
    generation, of partitions recovery reads now, as active or as standby."""
    from streams.kafka.app import ReadChangelogQueue

    app = create_app(Settings()).app
    tables = app.tables
    recovery = tables.recovery
    queue = tables.changelog_queue
    assert isinstance(queue, ReadChangelogQueue) and tables.changelog_queue is queue
    kept, revoked, standby = (TP("app-account-state-changelog", p) for p in (0, 4, 5))
    recovery.active_tps.add(kept)
    recovery.standby_tps.add(standby)
    app.consumer_generation_id = 7

    def event(tp: TP, offset: int, generation: int = 7) -> Any:
        return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset,
                                                       generation_id=generation))

    async def taken() -> list[tuple[int, int]]:
        for e in (event(revoked, 7), event(kept, 2, generation=6), event(kept, 3),
                  event(revoked, 8), event(standby, 1)):
            queue.put_nowait(e)
        got = [await queue.get(), await queue.get()]
        return [(e.message.tp.partition, e.message.offset) for e in got]

    assert asyncio.run(taken()) == [(0, 3), (5, 1)]
    assert queue.dropped == 3 and queue.empty()


def test_changelog_records_stop_at_a_rebalance():
    """A changelog record's delivery that waited through a rebalance is the last: the
    rest are not delivered and the read offset stays where recovery's seek put it, so
    the partition's reading from the seek is not skipped."""
    app = create_app(Settings()).app
    consumer = app.consumer
    tp = TP("app-account-state-changelog", 4)
    app.consumer_generation_id = 3
    consumer._read_offset[tp] = None
    delivered: list[int] = []

    async def callback(message: Any) -> None:
        delivered.append(message.offset)
        if message.offset == 11:  # a rebalance while this one waited; recovery seeks
            app.consumer_generation_id = 4
            consumer._read_offset[tp] = None

    consumer.callback = callback
    consumer._to_message = lambda tp, record: record
    records = {tp: offsets(10, 14)}
    assert asyncio.run(consumer._split(records, None, app.topics.batch_topics, 3)) == {}
    assert delivered == [10, 11]
    assert consumer._read_offset[tp] is None
    app.consumer_generation_id = 4
    assert asyncio.run(consumer._split(records, None, app.topics.batch_topics, 4)) == {}
    assert delivered == [10, 11, 10, 11, 12, 13] and consumer._read_offset[tp] == 14


def test_the_tables_free_the_partitions_they_no_longer_hold():
    """faust's in-memory store drops at the end of recovery only the keys it read from
    the changelog; the accounts, segments and chunks this worker wrote itself go too."""
    from streams.core.dedup import Segment
    from streams.core.series import ChunkRecord
    from streams.core.state import AccountState

    wiring = create_app(Settings())
    accounts, partitions = wiring.accounts, wiring.partitions
    for p in (1, 2):
        accounts.data[f"acct-{p}"] = AccountState(f"acct-{p}", p)
        partitions.data[f"{p}:000000000000"] = (p, Segment(0, 0, 0), None)
        partitions.data[f"{p}:series:spring:1m:0"] = ChunkRecord(p, "spring", 0, 0, {}, [])
    kept = {TP(accounts.changelog_topic.get_topic_name(), 2)}
    asyncio.run(accounts.on_recovery_completed(kept, set()))
    kept = {TP(partitions.changelog_topic.get_topic_name(), 2)}
    asyncio.run(partitions.on_recovery_completed(set(), kept))  # a standby is held too
    assert list(accounts.data) == ["acct-2"]
    assert sorted(partitions.data) == ["2:000000000000", "2:series:spring:1m:0"]
