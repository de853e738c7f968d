"""The faust wiring: rankflow's extension points are the ones in use."""

from __future__ import annotations

import asyncio
from unittest import mock

from streams.app import PromptTableManager, create_app
from streams.settings import Settings
from streams.transport import (
    FETCH_MAX_WAIT_MS,
    BatchConductor,
    BatchConsumer,
    BatchConsumerThread,
)


def test_the_app_uses_the_batch_transport_and_the_prompt_table_manager():
    app = create_app(Settings()).app
    assert isinstance(app.topics, BatchConductor)
    assert app.transport.Consumer is BatchConsumer
    assert isinstance(app.tables, PromptTableManager)


def test_the_table_manager_starts_recovery_without_faust_s_one_second_pause():
    tables = create_app(Settings()).app.tables
    with mock.patch.object(tables, "sleep") as sleep, \
            mock.patch.object(tables, "_update_channels") as update, \
            mock.patch.object(tables.recovery, "start") as start:
        asyncio.run(tables.on_start())
    sleep.assert_not_called()
    update.assert_awaited_once()
    start.assert_awaited_once()


def test_the_worker_consumer_fetches_with_a_short_wait():
    """faust's 1,500 ms fetch wait held busy partitions behind fetches of idle ones."""
    consumer = create_app(Settings()).app.consumer
    thread = consumer._thread
    assert isinstance(thread, BatchConsumerThread)

    async def created() -> int:
        worker_consumer = thread._create_worker_consumer(consumer.transport)
        return worker_consumer._fetch_max_wait_ms

    assert asyncio.run(created()) == FETCH_MAX_WAIT_MS == 100
