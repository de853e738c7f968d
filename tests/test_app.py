"""The faust wiring: rankflow's extension points are the ones in use."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from streams.app import create_app
from streams.settings import Settings
from streams.transport import (
    FETCH_MAX_WAIT_MS,
    BatchConductor,
    BatchConsumer,
    BatchConsumerThread,
)


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
