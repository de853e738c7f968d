"""Fencing: a worker that lost a partition writes nothing more for it.

Responsible for:

* stamping every write with its owner epoch per partition: the consumer group's
  generation when the write was built (a newer owner always holds a newer one), and a
  write sequence per partition (what Redis last received from this worker);
* noticing a stall: when the process did not run for the session timeout or longer
  (a SIGSTOP, a throttled container), the group has dropped this worker and given its
  partitions to another; every write built before is then stale and is not sent, to
  Redis or to the changelog, whichever generation the consumer still shows. A thread of
  its own watches, not the event loop: a long batch keeps the loop busy while faust's
  consumer thread goes on heartbeating, and that is no stall (the crash trials' first
  batches take a minute: tests/integration/test_crash_trials.py).

Redis checks the epoch inside the write scripts (streams/sink/lua/fence.lua), so a stale
write that left before the stall was noticed is refused there too
(tests/integration/test_fencing.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from streams.core.updates import Fences

log = logging.getLogger(__name__)

#: seconds between two proofs of life of the process (a longer gap is a stall)
WATCH_INTERVAL_S = 0.5


class PartitionFence:
    """The owner epoch and write sequence of this worker's writes, and its stalls."""

    def __init__(self, generation: Callable[[], int], session_timeout_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.generation = generation
        self.session_timeout_s = session_timeout_s
        self.monotonic = monotonic
        self._last_run = monotonic()
        #: writes stamped with an older epoch were built before a stall: never sent
        self._stale_below = 0
        self._sequence: dict[int, int] = {}

    def stamp(self, partitions: Iterable[int]) -> Fences:
        """The fences of a write for these partitions, built now."""
        self.alive()
        epoch = self.generation()
        fences = {}
        for p in partitions:
            seq = self._sequence[p] = self._sequence.get(p, 0) + 1
            fences[p] = (epoch, seq)
        return fences

    def start(self) -> None:
        """Watch for stalls from a daemon thread, for the life of the process."""
        def watch() -> None:
            while True:
                time.sleep(WATCH_INTERVAL_S)
                self.alive()

        threading.Thread(target=watch, name="stall-watch", daemon=True).start()

    def alive(self) -> None:
        """The process runs (the watch thread calls this twice a second, and every check
        of a write): a gap of the session timeout or more since the last call was a
        stall."""
        now = self.monotonic()
        stalled = now - self._last_run
        self._last_run = now
        if stalled >= self.session_timeout_s:
            self._stale_below = self.generation() + 1
            log.warning("this worker stalled for %.1f s, past the session timeout of %.0f s: "
                        "its partitions went to another; the writes it had in hand are "
                        "dropped, and it writes again once the group has re-admitted it",
                        stalled, self.session_timeout_s)

    def may_write(self) -> bool:
        """May a write built now be sent (no stall since the group last admitted it)?"""
        self.alive()
        return self.generation() >= self._stale_below

    def current(self, fences: Mapping[int, tuple[int, int]]) -> bool:
        """May a write with these fences still be sent?"""
        self.alive()
        return all(epoch >= self._stale_below for epoch, _ in fences.values())
