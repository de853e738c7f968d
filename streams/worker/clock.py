"""The worker's clock, contract §2 (Windows): the wall clock, or the largest event time seen."""

from __future__ import annotations

import time
from collections.abc import Mapping

from streams.core.aggregate import PartitionRuntime


class WorkerClock:
    """Milliseconds now: wall time, or under the event clock the largest event time any
    owned partition has seen, never moving back (a partition that leaves keeps it)."""

    def __init__(self, event_clock: bool, runtimes: Mapping[int, PartitionRuntime]) -> None:
        self.event_clock = event_clock
        self.runtimes = runtimes
        self._event_ms = 0

    def __call__(self) -> int:
        if not self.event_clock:
            return int(time.time() * 1000)
        for runtime in self.runtimes.values():
            self._event_ms = max(self._event_ms, runtime.progress.clock)
        return self._event_ms
