"""Decay on time, contract §2 (Windows): accounts whose buckets left a rolling window are re-scored
and rewritten with no new event — in every batch, and once a second under the wall clock
(tests/integration/test_decay.py, test_restart_decay.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from streams.core.aggregate import PartitionRuntime
from streams.core.state import AccountState
from streams.core.updates import BoardUpdates
from streams.sink.rewrite import Submit
from streams.worker.metrics import WorkerMetrics


class DecayTimer:
    """Finds the accounts due to decay; on each tick, writes their new scores."""

    def __init__(self, runtimes: Mapping[int, PartitionRuntime],
                 accounts: Mapping[str, AccountState], updates: BoardUpdates,
                 clock: Callable[[], int], submit: Submit, lock: asyncio.Lock,
                 metrics: WorkerMetrics) -> None:
        self.runtimes = runtimes
        self.accounts = accounts
        self.updates = updates
        self.clock = clock
        self.submit = submit
        self.lock = lock
        self.metrics = metrics

    def due(self, clock: int) -> dict[str, AccountState]:
        """Accounts with a bucket that left a rolling window by `clock`, pruned (no other
        pruning is needed: sums skip old buckets, and every bucket is due once)."""
        found: dict[str, AccountState] = {}
        for runtime in self.runtimes.values():
            for account_id in runtime.schedule.pop_due(clock):
                state = self.accounts.get(account_id)
                if state is not None:
                    state.prune(clock)
                    found[account_id] = state
        self.metrics.decayed += len(found)
        return found

    async def tick(self, *_: object) -> None:
        """Wall clock: re-score accounts whose buckets left a window, with no new event."""
        async with self.lock:
            if not self.runtimes:
                return
            clock = self.clock()
            write = self.submit(self.updates.of(self.due(clock).values(), set(),
                                                set(self.runtimes), clock, clock))
        await write
