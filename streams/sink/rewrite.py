"""The one rewrite path: the Redis layout of some partitions, from their state.

Used for the worker's restore of recovered partitions (`restored`: only what Redis may
lack), its rewrite after Redis lost data, and `rankflow rebuild` (streams/ops/rebuild.py)
(`rewrite`: all of it). Accounts go in chunks, each written with its listed category
looked up so that an account Redis still shows on an older category board leaves it
(tests/integration/test_rebuild.py); then every partition's campaign totals and
counters, whole.

A restore reads each partition's done mark: the last writer's update Redis holds whole
and the clock of its decays (lua/fence.lua's `mark_done`). Accounts whose state that
update or an older one carried, and that no window has left since, are in Redis as the
state has them; the rest are rewritten (`redis_may_lack`). While a partition is being
rewritten its updates mark nothing done: a crash then leaves the next owner a mark from
before, and so the same accounts to rewrite (tests/integration/test_crash_trials.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

from streams.core.aggregate import PartitionRuntime
from streams.core.state import AccountState
from streams.core.updates import BoardUpdate, BoardUpdates, DoneMark, redis_may_lack

log = logging.getLogger(__name__)

#: queues one update's write and returns what to wait for
Submit = Callable[[BoardUpdate], Awaitable[None]]
#: the done marks Redis holds for these partitions
Marks = Callable[[list[int]], Awaitable[Mapping[int, DoneMark]]]
#: picks the accounts to write at a clock, among those of the partitions rewritten
Select = Callable[[AccountState, int], bool]


async def no_marks(partitions: list[int]) -> Mapping[int, DoneMark]:
    """No done marks: a restore rewrites everything (`rankflow rebuild` restores none)."""
    return {}


class LayoutRewriter:
    """Rewrites owned accounts, campaign totals and counters in Redis from state.

    Each chunk is built under `lock` from the accounts as they are then, so a running
    worker goes on applying batches between chunks.
    """

    def __init__(self, accounts: Mapping[str, AccountState],
                 runtimes: Mapping[int, PartitionRuntime], updates: BoardUpdates,
                 clock: Callable[[], int], submit: Submit, lock: asyncio.Lock,
                 chunk: int, marks: Marks = no_marks,
                 epoch: Callable[[], int] = lambda: 0) -> None:
        self.accounts = accounts
        self.runtimes = runtimes
        self.updates = updates
        self.clock = clock
        self.submit = submit
        self.lock = lock
        self.chunk = chunk
        self.marks = marks
        self.epoch = epoch
        self._restores: set[asyncio.Future[int]] = set()

    async def rewrite(self, why: str, partitions: set[int] | None = None) -> int:
        """Rewrite every owned account (of `partitions` only, when named), then all
        campaign totals and counters; returns the number of accounts written."""
        with self._rewriting(partitions):
            return await self._write(why, partitions, None)

    def restored(self, partitions: set[int]) -> asyncio.Future[int]:
        """Rewrite what Redis may lack of newly restored partitions, then all campaign
        totals and counters; from now (before any batch) until it is written, their
        updates mark nothing done."""
        held = self._hold(partitions)

        async def restore() -> int:
            try:
                marks = await self.marks(sorted(partitions))
                epoch = self.epoch()
                return await self._write(
                    "partitions recovered from the changelog", partitions,
                    lambda state, clock: redis_may_lack(state, marks.get(state.partition),
                                                        clock, epoch))
            finally:
                self._release(held)

        task = asyncio.ensure_future(restore())
        self._restores.add(task)
        task.add_done_callback(self._restores.discard)
        return task

    async def _write(self, why: str, partitions: set[int] | None,
                     select: Select | None) -> int:
        started = time.monotonic()
        async with self.lock:
            clock = self.clock()
            owned = [s for s in self.accounts.values() if self._owned(s, partitions)]
            chosen = [s.account_id for s in owned if select is None or select(s, clock)]
        if not owned and not self.runtimes:
            return 0
        held = "" if select is None else f" ({len(owned) - len(chosen)} more Redis holds)"
        log.info("%s: rewriting %d accounts of %d partitions from state%s", why,
                 len(chosen), len(self.runtimes), held)
        for start in range(0, len(chosen), self.chunk):
            await self._accounts(chosen[start:start + self.chunk])
        async with self.lock:
            clock = self.clock()
            write = self.submit(self.updates.totals(clock, clock))
        await write
        log.info("Redis rewritten from state: %d accounts in %.1fs", len(chosen),
                 time.monotonic() - started)
        return len(chosen)

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

    @contextmanager
    def _rewriting(self, partitions: set[int] | None) -> Iterator[None]:
        held = self._hold(partitions)
        try:
            yield
        finally:
            self._release(held)

    def _hold(self, partitions: set[int] | None) -> list[PartitionRuntime]:
        """The runtimes rewritten: their updates mark nothing done until released."""
        held = [r for p, r in self.runtimes.items() if partitions is None or p in partitions]
        for runtime in held:
            runtime.rewriting += 1
        return held

    @staticmethod
    def _release(held: list[PartitionRuntime]) -> None:
        for runtime in held:
            runtime.rewriting -= 1

    def _owned(self, state: AccountState, partitions: set[int] | None) -> bool:
        return state.partition in self.runtimes and (partitions is None
                                                     or state.partition in partitions)
