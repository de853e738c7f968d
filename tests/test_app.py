"""The faust wiring: rankflow's extension points are the ones in use."""

from __future__ import annotations

import asyncio

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
