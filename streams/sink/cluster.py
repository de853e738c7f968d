"""The Redis Cluster backend of the layout writer: a batch's writes grouped by hash slot.

The contract's keys (contract §4) have no hash tags, so a batch's boards, account hashes
and totals lie in many slots, and a script may touch the keys of one slot only. So
`ClusterBoardWriter` splits a batch's changes by slot (`by_slot`) and sends one
lua/apply_changes.lua call per slot, its keys all declared; each carries the owner check
against that slot's owners hash (`SlotKeys.owners`: the fence exists per slot, and a claim
writes it into every slot). Totals (`rf:meta`, `rf:campaign:{c}`) sum their partitions'
shares kept in their own slot (`SlotKeys.parts`).

Redis behind the state (a replica that missed acknowledged writes took over): a write
ends, on every shard, with lua/stamp.lua on that shard's stamps hash, after the shard's
other writes in the same pipeline; a stamp found there vouches for every write before it on
that shard (replication keeps their order), and one older than the last acknowledged
means the shard lost writes (tests/integration/test_redis_cluster.py).

The single-Redis path (streams/sink/writer.py) is untouched by any of this.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import NoScriptError

from streams.core.updates import BoardUpdate, DoneMark, Fences
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys, SlotKeys
from streams.sink.writer import (
    STAMP_FIELDS,
    BoardChanges,
    LayoutWriter,
    RedisBoardWriter,
    apply_changes_payload,
    fenced_script,
    fields_of,
    script,
    stamps_of,
)

log = logging.getLogger(__name__)
#: one script call: the script's name (SCRIPTS), its keys, its arguments
Call = tuple[str, list[str], list[Any]]

#: slots a claim writes in one pipeline (all 16,384 go, in pieces this size)
CLAIM_CHUNK = 4096
#: the scripts this backend sends, by name
SCRIPTS = {"apply": fenced_script("apply_changes"), "sum": script("sum_parts"),
           "stamp": fenced_script("stamp")}


def slot_of(key: str) -> int:
    return key_slot(key.encode())


def by_slot(parts: Mapping[int, BoardChanges]) -> dict[int, dict[int, BoardChanges]]:
    """Each partition's changes split by the hash slot of the keys they touch:
    slot -> partition -> that partition's changes in that slot."""
    slots: dict[int, dict[int, BoardChanges]] = {}

    def part(key: str, partition: int) -> BoardChanges:
        in_slot = slots.setdefault(slot_of(key), {})
        changes = in_slot.get(partition)
        if changes is None:
            changes = in_slot[partition] = BoardChanges()
        return changes

    for partition, changes in parts.items():
        for key, members in changes.removes.items():
            part(key, partition).removes[key] = members
        for key, scored in changes.adds.items():
            part(key, partition).adds[key] = scored
        for fields in changes.hash_deletes:
            part(fields[0], partition).hash_deletes.append(fields)
        for fields in changes.hash_sets:
            part(fields[0], partition).hash_sets.append(fields)
        for change in changes.set_changes:
            part(str(change[0]), partition).set_changes.append(change)
    return slots


class Node(Protocol):
    """A cluster node as redis-py's slots cache holds it."""

    @property
    def name(self) -> str: ...


def shard_slots(slots: Mapping[int, Sequence[Node]]) -> list[int]:
    """The first slot of each shard (a primary and its replicas) in a slot -> nodes map
    whose first node is the slot's primary: where that shard's stamps are kept. A failover
    keeps a shard's slots, so its first slot stays."""
    first: dict[str, int] = {}
    for slot, nodes in slots.items():
        if nodes:
            name = nodes[0].name
            if slot < first.get(name, slot + 1):
                first[name] = slot
    return sorted(first.values())


def oldest(found: Iterable[Fences], partitions: Iterable[int]) -> Fences:
    """Per partition the oldest stamp over the shards; absent where a shard has none."""
    found = list(found)
    stamps = {}
    for p in partitions:
        held = [f.get(p) for f in found]
        if found and all(h is not None for h in held):
            stamps[p] = min(h for h in held if h is not None)
    return stamps


class ClusterBoardWriter(LayoutWriter):
    """The layout writer on a Redis Cluster: one script per slot a batch touches."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, windows: Windows) -> None:
        super().__init__(client, keys, windows)
        self.slot_keys = SlotKeys(keys.prefix)
        self._sha: dict[str, str] = {}

    async def write(self, update: BoardUpdate,
                    after: Mapping[int, tuple[int, int]] | None = None,
                    generation: str | None = None) -> list[int]:
        """One update (see RedisBoardWriter.write), by slot; returns the partitions a
        shard was found behind on. It marks nothing done (see `done`)."""
        parts = await self.changes(update.views, update.profiles)
        self.add_series(parts, update.series)
        fences = update.fences
        changes: list[Call] = []
        for slot, in_slot in by_slot(parts).items():
            touched = sorted(set().union(*(c.touched() for c in in_slot.values())))
            stamped = {p: fences[p] for p in in_slot if p in fences}
            changes.append(("apply", [self.slot_keys.owners(slot), *touched],
                            [apply_changes_payload(in_slot, stamped)]))
        for (partition, campaign), totals in update.campaigns.items():
            changes.append(("sum", self._total_keys(self.keys.campaign(campaign)),
                            self.campaign_args(partition, totals, fences)))
        for partition, (events, dlq) in update.partitions.items():
            changes.append(("sum", self._total_keys(self.keys.meta),
                            self.meta_args(update, partition, events, dlq)))
        stamps: list[Call] = []
        if fences:
            stamp = orjson.dumps({"fence": {str(p): list(f) for p, f in fences.items()},
                                  "after": {str(p): list(f) for p, f in (after or {}).items()}})
            stamps = [("stamp", [self.slot_keys.stamps(s)], [stamp])
                      for s in await self._shards()]
        applied, stamped_results = await self._run(changes, stamps, update,
                                                   self.notice(update, parts))
        refused: set[int] = set()
        behind: set[int] = set()
        outcomes = [r for (name, _, _), r in zip(changes, applied, strict=True)
                    if name == "apply"] + stamped_results
        for refused_here, behind_here in outcomes:
            refused.update(int(p) for p in refused_here)
            behind.update(int(p) for p in behind_here)
        if refused:
            log.warning("partitions %s have a newer owner: this worker's writes for them "
                        "were refused", sorted(refused))
        return sorted(behind)

    async def claim(self, fences: Mapping[int, tuple[int, int]]) -> None:
        """Take partitions over in every slot (a stalled owner's write to any slot must
        meet the new epoch there), and in every shard's stamps."""
        if not fences:
            return
        mapping: dict[Any, Any] = {f"{p}.{name}": value for p, (epoch, seq) in fences.items()
                   for name, value in (("epoch", epoch), ("seq", seq))}
        keys = [self.slot_keys.owners(s) for s in range(REDIS_CLUSTER_HASH_SLOTS)]
        keys += [self.slot_keys.stamps(s) for s in await self._shards()]
        for start in range(0, len(keys), CLAIM_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start:start + CLAIM_CHUNK]:
                pipe.hset(key, mapping=mapping)
            await pipe.execute()

    async def written(self, partitions: list[int]) -> Fences:
        """The oldest stamp over the shards for each partition (absent: a shard has none)."""
        fields = fields_of(partitions, STAMP_FIELDS)
        pipe = self.client.pipeline(transaction=False)
        for slot in await self._shards():
            pipe.hmget(self.slot_keys.stamps(slot), fields)
        found = await pipe.execute()
        return oldest((stamps_of(values, partitions) for values in found), partitions)

    async def done(self, partitions: list[int]) -> dict[int, DoneMark]:
        """None: a restore on a cluster rewrites every account. A shard flushed alone
        loses its data and its stamps, and a write before the worker noticed would mark
        it done again; one Redis checks the generation marker inside the script, which a
        shard's script cannot reach (its key is in another slot)."""
        return {}

    def _total_keys(self, total: str) -> list[str]:
        """lua/sum_parts.lua's keys for a total: its shares, itself, its slot's owners."""
        return [self.slot_keys.parts(total), total, self.slot_keys.owners(slot_of(total))]

    async def _shards(self) -> list[int]:
        client: Any = self.client
        await client.initialize()  # the slot map (once; redis-py refreshes it on MOVED)
        return shard_slots(client.nodes_manager.slots_cache)

    async def _run(self, changes: list[Call], stamps: list[Call], update: BoardUpdate,
                   notice: bytes | None) -> tuple[list[Any], list[Any]]:
        """One pipeline (redis-py sends each node its share, in order): the changes, the
        sets and the notice, then the stamps; the results of the changes and of the
        stamps. The scripts are loaded again where a node lacks them (a replica promoted
        since: SCRIPT LOAD is not replicated)."""
        for attempt in (1, 2):
            if not self._sha:
                await self._load_scripts()
            pipe = self.client.pipeline(transaction=False)
            for name, keys, args in changes:
                pipe.execute_command("EVALSHA", self._sha[name], len(keys), *keys, *args)
            # the campaign registry only grows here: its pruning (lua/apply_changes.lua)
            # reads every window's board of a campaign, which lie in other slots
            self.index_sets(pipe, update, notice, register_campaigns=True)
            for name, keys, args in stamps:
                pipe.execute_command("EVALSHA", self._sha[name], len(keys), *keys, *args)
            try:
                found = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                self._sha = {}
                continue
            return found[:len(changes)], found[len(found) - len(stamps):]
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _load_scripts(self) -> None:
        """Every script on every primary (redis-py sends SCRIPT LOAD to all of them)."""
        for name, source in SCRIPTS.items():
            self._sha[name] = await self.client.script_load(source)


def board_writer(client: aioredis.Redis, keys: RedisKeys, windows: Windows
                 ) -> RedisBoardWriter | ClusterBoardWriter:
    """The writer for this client: by slot on a Redis Cluster, else one script a batch."""
    from streams.ops.connections import is_cluster

    if is_cluster(client):
        return ClusterBoardWriter(client, keys, windows)
    return RedisBoardWriter(client, keys, windows)
