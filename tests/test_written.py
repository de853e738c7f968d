"""A worker's own acked changelog records count as read by faust's recovery only when
nothing else could lie between them and what it read (streams/kafka/written.py)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.kafka.written import OwnRecordsRead

TOPIC = "app-account-state-changelog"


def setup(offsets: dict[int, int | None]) -> tuple[OwnRecordsRead, Any, dict[int, object]]:
    recovery = SimpleNamespace(active_tps={TP(TOPIC, p) for p in offsets},
                               active_offsets=Counter({TP(TOPIC, p): o
                                                       for p, o in offsets.items()}))
    owners: dict[int, object] = {p: object() for p in offsets}
    return OwnRecordsRead(lambda: recovery, owners.get), recovery, owners


def read(recovery: Any, partition: int) -> int | None:
    return recovery.active_offsets.get(TP(TOPIC, partition))


def test_records_following_the_read_offset_count_as_read():
    own, recovery, owners = setup({0: 41, 1: -1})
    own.acked([(TOPIC, 0, 43), (TOPIC, 0, 42), (TOPIC, 1, 0)], dict(owners))
    assert (read(recovery, 0), read(recovery, 1), own.counted) == (43, 0, 3)


def test_a_record_of_another_writer_between_stops_the_count():
    """Offset 43 is not this worker's (a stalled worker's late send): it must be read."""
    own, recovery, owners = setup({0: 41})
    own.acked([(TOPIC, 0, 42), (TOPIC, 0, 44), (TOPIC, 0, 45)], dict(owners))
    assert read(recovery, 0) == 42
    own.acked([(TOPIC, 0, 46)], dict(owners))
    assert read(recovery, 0) == 42


def test_a_partition_owned_anew_since_the_records_were_built_is_left_to_reading():
    own, recovery, owners = setup({0: 41})
    built_under = dict(owners)
    owners[0] = object()  # a rebalance: the partition restored again from its tables
    own.acked([(TOPIC, 0, 42)], built_under)
    assert read(recovery, 0) == 41


def test_a_partition_recovery_does_not_read_or_has_no_offset_is_left_alone():
    own, recovery, owners = setup({0: 41, 1: None})
    recovery.active_tps.discard(TP(TOPIC, 0))
    own.acked([(TOPIC, 0, 42), (TOPIC, 1, 0), (TOPIC, 2, 0)], {**owners, 2: object()})
    assert (read(recovery, 0), read(recovery, 1), own.counted) == (41, None, 0)


def test_records_already_read_are_passed_over():
    own, recovery, owners = setup({0: 41})
    own.acked([(TOPIC, 0, 40), (TOPIC, 0, 41), (TOPIC, 0, 42)], dict(owners))
    assert read(recovery, 0) == 42
