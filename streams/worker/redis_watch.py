"""Redis as the worker sees it: its writes, and the watch for a Redis that lost its data.

Responsible for:

* `RedisWrites`: writing a board update, retried while Redis is away, after adopting
  the data generation marker before the worker's first write; claiming newly owned
  partitions (streams/worker/fence.py); reading their done marks (a restore's
  rewrite: streams/sink/rewrite.py);
* `RedisWatch`: noticing, once a second, that the marker is gone or replaced (FLUSHALL,
  a restart without persistence), and then rewriting the layout of every owned
  partition from state (tests/integration/test_redis_loss.py); and that Redis is behind
  the state (an older copy of itself: a failover to a replica that missed acknowledged
  writes, a restore from a backup), when a partition's owner stamp in Redis is older
  than the last this worker had acknowledged, and then rewriting that partition
  (tests/integration/test_redis_behind.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Protocol

import redis.asyncio as aioredis

from streams.core.updates import BoardUpdate, DoneMark, Fences, in_chunks
from streams.worker.retry import RetryWatcher, retrying

log = logging.getLogger(__name__)
#: accounts per Redis write at most, so that no call holds Redis for 100 ms (500 came
#: near it on big boards: tests/integration/test_bounded_writes.py), far inside the
#: socket timeout (RANKFLOW_REDIS_SOCKET_TIMEOUT; tests/test_worker.py)
WRITE_CHUNK = 200


class GenerationStore(Protocol):
    """The marker set once per life of the Redis data (RedisBoardWriter)."""

    async def generation(self) -> str | None: ...

    async def claim_generation(self) -> str: ...

    async def write(self, update: BoardUpdate, after: Fences,
                    generation: str | None) -> list[int]: ...

    async def claim(self, fences: Fences) -> None: ...

    async def written(self, partitions: list[int]) -> Fences: ...

    async def done(self, partitions: list[int]) -> dict[int, DoneMark]: ...


class Fence(Protocol):
    """PartitionFence: may a write stamped with these fences still be sent?"""

    def current(self, fences: Mapping[int, tuple[int, int]]) -> bool: ...


class RedisWrites:
    """Writes board updates; knows the data generation they went to."""

    def __init__(self, store: GenerationStore, fence: Fence,
                 watcher: RetryWatcher | None = None) -> None:
        self.store = store
        self.fence = fence
        self.watcher = watcher  # told of failing writes (the worker's liveness)
        #: the generation this worker's writes went to (None before the first)
        self.generation: str | None = None
        #: partition -> the newest owner stamp Redis acknowledged from this worker
        self.acked: Fences = {}
        #: partitions a write found Redis behind on (its stamp older than `acked`)
        self.found_behind: set[int] = set()

    async def adopt_generation(self) -> None:
        """Before this worker's first write: adopt the marker in force, or claim one for
        a new (or emptied) Redis. What Redis lacks then is what was recovered, and the
        restore rewrites that; what this worker writes from here on is checked."""
        try:
            self.generation = (await self.store.generation()
                               or await self.store.claim_generation())
        except aioredis.RedisError as exc:
            log.warning("could not read the Redis generation marker: %s", exc)

    async def write(self, update: BoardUpdate) -> None:
        """Write an update, unless it was built before a stall (fence.py)."""
        if not self.fence.current(update.fences):
            return
        if self.generation is None:
            await self.adopt_generation()
        after = {p: self.acked[p] for p in update.fences if p in self.acked}
        for part in in_chunks(update, WRITE_CHUNK):
            behind = await retrying("writing Redis",
                                    partial(self.store.write, part, after, self.generation),
                                    watcher=self.watcher)
            self.found_behind.update(behind)
        self._acknowledged(update.fences)

    async def claim(self, fences: Fences) -> None:
        """Take over newly assigned partitions before writing for them."""
        await retrying("claiming partitions in Redis", partial(self.store.claim, fences),
                       watcher=self.watcher)
        self._acknowledged(fences)

    async def done_marks(self, partitions: list[int]) -> dict[int, DoneMark]:
        """The done marks Redis holds for these partitions (streams/sink/rewrite.py)."""
        return await retrying("reading the done marks in Redis",
                              partial(self.store.done, partitions), watcher=self.watcher)

    async def behind(self, owned: list[int]) -> list[int]:
        """The owned partitions whose owner stamp in Redis is older than the newest it
        acknowledged, or that a write found so since the last call (its own stamp then
        hides it): Redis went back to an older copy of itself. (A newer stamp is a newer
        owner's, and fine.)"""
        found_behind, self.found_behind = self.found_behind, set()
        want = {p: self.acked[p] for p in owned if p in self.acked}
        if not want:
            return []
        found = await self.store.written(sorted(want))
        return [p for p, stamp in sorted(want.items())
                if found.get(p, (-1, -1)) < stamp or p in found_behind]

    def _acknowledged(self, fences: Fences) -> None:
        acked = self.acked
        for partition, stamp in fences.items():
            if stamp > acked.get(partition, (-1, -1)):
                acked[partition] = stamp


class Rewrite(Protocol):
    """LayoutRewriter.rewrite: every owned partition's layout, or the named ones'."""

    def __call__(self, why: str, partitions: set[int] | None = None) -> Awaitable[object]: ...


class RedisWatch:
    """Rewrites the layout from state when Redis no longer holds what was written."""

    def __init__(self, writes: RedisWrites, rewrite: Rewrite,
                 owned: Callable[[], Iterable[int]]) -> None:
        self.writes = writes
        self.rewrite = rewrite
        self.owned = owned

    async def check(self, *_: object) -> None:
        """The marker missing or changed means Redis lost its data: claim a new one,
        then rewrite every owned partition (batches go on between chunks). Else the
        partitions Redis is behind on are rewritten."""
        writes = self.writes
        if writes.generation is None:  # nothing written yet
            await writes.adopt_generation()
            return
        store = writes.store
        try:
            lost = await store.generation() != writes.generation
            if lost:
                writes.generation = await store.claim_generation()
            else:
                behind = await writes.behind(list(self.owned()))
        except aioredis.RedisError as exc:
            log.warning("could not check the Redis generation marker: %s", exc)
            return
        if lost:
            log.warning("Redis has lost its data (generation marker gone or replaced)")
            await self.rewrite("Redis lost its data")
        elif behind:
            log.warning("Redis is behind the state for partitions %s (an older copy of "
                        "itself: a failover to a replica that missed writes, or a restore)",
                        behind)
            await self.rewrite("Redis was behind the state", set(behind))
