"""Redis as the worker sees it: its writes, and the watch for a Redis that lost its data.

Responsible for:

* `RedisWrites`: writing a board update, retried while Redis is away, after adopting
  the data generation marker before the worker's first write;
* `RedisWatch`: noticing, once a second, that the marker is gone or replaced (FLUSHALL,
  a restart without persistence), and then rewriting the layout of every owned
  partition from state (tests/integration/test_redis_loss.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import redis.asyncio as aioredis

from streams.core.updates import BoardUpdate, in_chunks
from streams.worker.retry import RetryWatcher, retrying

log = logging.getLogger(__name__)
#: accounts per Redis write at most: one script call of 100,000 accounts took 4.7 s (a
#: decay tick at midnight, a batch of a cold start), 5,000 take 0.2 s, far inside the
#: socket timeout (RANKFLOW_REDIS_SOCKET_TIMEOUT; tests/test_worker.py)
WRITE_CHUNK = 5_000


class GenerationStore(Protocol):
    """The marker set once per life of the Redis data (RedisBoardWriter)."""

    async def generation(self) -> str | None: ...

    async def claim_generation(self) -> str: ...

    async def write(self, update: BoardUpdate) -> None: ...


class RedisWrites:
    """Writes board updates; knows the data generation they went to."""

    def __init__(self, store: GenerationStore, watcher: RetryWatcher | None = None) -> None:
        self.store = store
        self.watcher = watcher  # told of failing writes (the worker's liveness)
        #: the generation this worker's writes went to (None before the first)
        self.generation: str | None = None

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
        if self.generation is None:
            await self.adopt_generation()
        for part in in_chunks(update, WRITE_CHUNK):
            await retrying("writing Redis", partial(self.store.write, part),
                           watcher=self.watcher)


class RedisWatch:
    """Rewrites the layout from state when Redis no longer holds what was written."""

    def __init__(self, writes: RedisWrites,
                 rewrite: Callable[[str], Awaitable[object]]) -> None:
        self.writes = writes
        self.rewrite = rewrite

    async def check(self, *_: object) -> None:
        """The marker missing or changed means Redis lost its data: claim a new one,
        then rewrite every owned partition (batches go on between chunks)."""
        writes = self.writes
        if writes.generation is None:  # nothing written yet
            await writes.adopt_generation()
            return
        store = writes.store
        try:
            if await store.generation() == writes.generation:
                return
            writes.generation = await store.claim_generation()
        except aioredis.RedisError as exc:
            log.warning("could not check the Redis generation marker: %s", exc)
            return
        log.warning("Redis has lost its data (generation marker gone or replaced)")
        await self.rewrite("Redis lost its data")
