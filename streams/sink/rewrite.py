"""The one rewrite path: the whole Redis layout of some partitions, from their state.

Used for the worker's restore of recovered partitions, its rewrite after Redis lost
data, and `rankflow rebuild` (streams/ops/rebuild.py). Accounts go in chunks, each
written with its listed category looked up so that an account Redis still shows on an
older category board leaves it (tests/integration/test_rebuild.py); then every
partition's campaign totals and counters, whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from streams.core.aggregate import PartitionRuntime
from streams.core.state import AccountState
from streams.core.updates import BoardUpdate, BoardUpdates

log = logging.getLogger(__name__)

#: queues one update's write and returns what to wait for
Submit = Callable[[BoardUpdate], Awaitable[None]]


class LayoutRewriter:
    """Rewrites owned accounts, campaign totals and counters in Redis from state.

    Each chunk is built under `lock` from the accounts as they are then, so a running
    worker goes on applying batches between chunks.
    """

    def __init__(self, accounts: Mapping[str, AccountState],
                 runtimes: Mapping[int, PartitionRuntime], updates: BoardUpdates,
                 clock: Callable[[], int], submit: Submit, lock: asyncio.Lock,
                 chunk: int) -> None:
        self.accounts = accounts
        self.runtimes = runtimes
        self.updates = updates
        self.clock = clock
        self.submit = submit
        self.lock = lock
        self.chunk = chunk

    async def rewrite(self, why: str, partitions: set[int] | None = None) -> int:
        """Rewrite every owned account (of `partitions` only, when named), then all
        campaign totals and counters; returns the number of accounts written."""
        started = time.monotonic()
        async with self.lock:
            owned = [s.account_id for s in self.accounts.values() if self._owned(s, partitions)]
        if not owned and not self.runtimes:
            return 0
        log.info("%s: rewriting %d accounts of %d partitions from state", why,
                 len(owned), len(self.runtimes))
        for start in range(0, len(owned), self.chunk):
            await self._accounts(owned[start:start + self.chunk])
        async with self.lock:
            clock = self.clock()
            write = self.submit(self.updates.totals(clock, clock))
        await write
        log.info("Redis rewritten from state: %d accounts in %.1fs", len(owned),
                 time.monotonic() - started)
        return len(owned)

    async def _accounts(self, account_ids: list[str]) -> None:
        async with self.lock:
            clock = self.clock()
            # each account as it is now (batches run between chunks)
            found = (self.accounts.get(a) for a in account_ids)
            chunk = [s for s in found if s is not None and s.partition in self.runtimes]
            for state in chunk:
                state.prune(clock)
            # every account's listed category is looked up: Redis may list it under a
            # category it had before (a crash lost a profile's Redis write, an old copy)
            write = self.submit(self.updates.of(chunk, {s.account_id for s in chunk}, (),
                                                clock, int(time.time() * 1000)))
        await write

    def _owned(self, state: AccountState, partitions: set[int] | None) -> bool:
        return state.partition in self.runtimes and (partitions is None
                                                     or state.partition in partitions)
