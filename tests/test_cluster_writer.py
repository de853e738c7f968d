"""The Redis Cluster writer's pure parts (streams/sink/cluster.py, keys.py): hash tags
that put rankflow's own keys in a chosen slot, a batch's changes split by slot, each
shard's first slot, the oldest stamp over the shards. The real cluster runs in
tests/integration/test_cluster_scripts.py and test_redis_cluster.py."""

from __future__ import annotations

from dataclasses import dataclass

from redis.crc import key_slot

from streams.sink.cluster import by_slot, oldest, shard_slots
from streams.sink.keys import RedisKeys, SlotKeys, slot_tags
from streams.sink.writer import BoardChanges


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_every_slot_has_a_tag_that_hashes_to_it():
    tags = slot_tags()
    assert len(tags) == 16384
    assert all(slot(t) == s for s, t in enumerate(tags))
    assert max(len(t) for t in tags) <= 5


def test_rankflows_own_keys_sit_in_the_slot_they_serve():
    keys, own = RedisKeys("rf:"), SlotKeys("rf:")
    for total in (keys.meta, keys.campaign("c1"), keys.campaign("大国工匠")):
        assert slot(own.parts(total)) == slot(total)
        assert own.parts(total).startswith("rf:parts:{")
    assert slot(own.owners(123)) == 123 and slot(own.stamps(16383)) == 16383
    assert own.owners(7) != own.stamps(7)
    assert own.parts(keys.meta) != own.parts(keys.campaign("meta"))


def test_a_batch_is_split_by_slot_each_part_with_its_partition():
    zero, one = BoardChanges(), BoardChanges()
    for n in range(40):
        zero.add(f"rf:lb:24h:cat:c{n}", "a", float(n))
        zero.hash_sets.append([f"rf:acct:a{n}", "fans", "1"])
    zero.remove("rf:lb:all:all", "gone")
    zero.hash_deletes.append(["rf:acct:a0", "name"])
    zero.set_changes.append(["rf:acct-campaigns:a1", ["c1"], ["c2"]])
    one.add("rf:lb:24h:cat:c0", "b", 2.0)
    slots = by_slot({0: zero, 1: one})
    for in_slot, parts in slots.items():
        for changes in parts.values():
            assert {slot(k) for k in changes.touched()} == {in_slot}
    # nothing lost, nothing doubled, each change under its own partition
    merged = {p: {k for parts in slots.values() for k in parts.get(p, BoardChanges()).touched()}
              for p in (0, 1)}
    assert merged == {0: zero.touched(), 1: one.touched()}
    home = slots[slot("rf:lb:24h:cat:c0")]
    assert home[0].adds["rf:lb:24h:cat:c0"] == {"a": 0.0}
    assert home[1].adds["rf:lb:24h:cat:c0"] == {"b": 2.0}
    assert slots[slot("rf:acct:a0")][0].hash_deletes == [["rf:acct:a0", "name"]]


@dataclass(frozen=True)
class FakeNode:
    name: str


def test_each_shard_keeps_its_stamps_in_its_first_slot():
    a, b, c, replica = FakeNode("a"), FakeNode("b"), FakeNode("c"), FakeNode("r")
    slots = {s: [a, replica] for s in range(0, 5461)}
    slots |= {s: [b] for s in range(5461, 10923)}
    slots |= {s: [c] for s in range(10923, 16384)}
    slots[100] = [c]  # a slot moved to another shard
    assert shard_slots(slots) == [0, 100, 5461]
    # a failover: the replica serves the first shard's slots, which keeps its first slot
    promoted = {s: ([replica] if nodes[0] is a else nodes) for s, nodes in slots.items()}
    assert shard_slots(promoted) == [0, 100, 5461]


def test_the_oldest_stamp_over_the_shards_and_none_where_a_shard_has_none():
    found = [{0: (4, 9), 1: (4, 3)}, {0: (4, 7), 1: (5, 1)}, {0: (4, 8)}]
    assert oldest(found, [0, 1, 2]) == {0: (4, 7)}
    assert oldest([], [0]) == {}

