"""Changelog records read in bulk while recovery reads their partition
(streams/kafka/bulk_read.py), with a fake recovery and the real table."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.core.state import AccountState
from streams.kafka.app import create_app
from streams.kafka.bulk_read import BulkChangelogReader
from streams.ops.settings import Settings


def setup(read_offset: int | None, in_recovery: bool = True) -> tuple[Any, Any, TP]:
    wiring = create_app(Settings())
    table = wiring.accounts
    tp = TP(table.changelog_topic.get_topic_name(), 1)
    flushed: list[bool] = []
    recovery = SimpleNamespace(in_recovery=in_recovery, active_tps={tp},
                               tp_to_table={tp: table}, active_offsets=Counter({tp: read_offset}),
                               flush_buffers=lambda: flushed.append(True))
    queue = SimpleNamespace(settled=lambda: True)
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery, changelog_queue=queue),
                          consumer_generation_id=5)
    return BulkChangelogReader(app), table, tp


def records(tp: TP, follows: list[int]) -> list[Any]:
    out = []
    for offset, n in enumerate(follows):
        (key, value), = AccountState(f"acct-{offset % 2}", 1, follows=n).records(0)
        out.append(SimpleNamespace(topic=tp.topic, partition=1, offset=offset,
                                   key=key.encode(), value=value))
    return out


def test_all_but_the_last_record_go_to_the_table_at_once():
    reader, table, tp = setup(read_offset=0)
    recs = records(tp, [1, 2, 3, 4])
    left = asyncio.run(reader.take(tp, recs, 5, lambda: True))
    assert [r.offset for r in left] == [3]
    assert reader.applied == 2  # offset 0 was read already
    assert table.data["acct-1"].follows == 2 and table.data["acct-0"].follows == 3
    assert reader.app.tables.recovery.active_offsets[tp] == 2


def test_nothing_in_bulk_outside_recovery_or_in_another_generation():
    for reader, table, tp, generation, flowing in (
            (*setup(None, in_recovery=False), 5, True),
            (*setup(None), 4, True), (*setup(None), 5, False)):
        recs = records(tp, [1, 2, 3])
        assert asyncio.run(reader.take(tp, recs, generation, lambda f=flowing: f)) == recs
        assert reader.applied == 0 and not table.data
