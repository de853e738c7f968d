"""The worker's health as an orchestrator probes it: ready, and live (not wedged).

Responsible for:

* `Readiness`: ready once the worker has been assigned its partitions and every one of
  them is recovered, as `PartitionOwnership.ready` says (its tables read to the end,
  or its runtime restored); not before the first assignment;
* `Liveness`: live unless a write (Redis, or a Kafka send) has been failing without a
  break for longer than `RANKFLOW_UNHEALTHY_AFTER`, so that a liveness probe restarts
  a wedged worker. Fed by the retry policy (streams/worker/retry.py): each failed
  attempt, and the success that ends a run of them.

Each answers with a `Probe`: up or not, and a JSON-able body saying why. Pure: the
endpoint that serves them is streams/worker/health_server.py (tests/test_health.py,
tests/integration/test_worker_health.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    """A probe's answer: `up` (HTTP 200, else 503) and the JSON body saying why."""

    up: bool
    body: dict[str, Any]


class Readiness:
    """Ready when every assigned partition is recovered (after the first assignment)."""

    def __init__(self, assigned: Callable[[], set[int]],
                 recovered: Callable[[int], bool]) -> None:
        self.assigned = assigned
        self.recovered = recovered
        self.joined = False

    def assignment_done(self, *_: Any, **__: Any) -> None:
        """A rebalance completed (faust's `on_rebalance_complete`): an assignment exists."""
        self.joined = True

    def probe(self) -> Probe:
        if not self.joined:
            return Probe(False, {"status": "starting",
                                 "reason": "no partitions assigned yet (joining the group)"})
        assigned = sorted(self.assigned())
        recovering = [p for p in assigned if not self.recovered(p)]
        if recovering:
            return Probe(False, {"status": "recovering", "assigned": assigned,
                                 "recovering": recovering,
                                 "reason": "reading the tables of partitions " +
                                 ", ".join(map(str, recovering))})
        return Probe(True, {"status": "ready", "assigned": assigned})


class Liveness:
    """Not live while some write has failed without a break for over `unhealthy_after` s."""

    def __init__(self, unhealthy_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.unhealthy_after = unhealthy_after
        self.clock = clock
        #: what is failing ("writing Redis", ...) -> when its first failing attempt began
        self.failing_since: dict[str, float] = {}

    def failing(self, what: str, since: float) -> None:
        """An attempt at `what` failed; its run of failures began at `since` (clock)."""
        self.failing_since[what] = min(since, self.failing_since.get(what, since))

    def succeeded(self, what: str) -> None:
        self.failing_since.pop(what, None)

    def probe(self) -> Probe:
        now = self.clock()
        failing = {what: round(now - since, 1) for what, since in self.failing_since.items()}
        stuck = sorted(what for what, seconds in failing.items()
                       if seconds > self.unhealthy_after)
        if stuck:
            return Probe(False, {"status": "unhealthy", "failing_seconds": failing,
                                 "unhealthy_after": self.unhealthy_after,
                                 "reason": f"{', '.join(stuck)} failing for over "
                                           f"{self.unhealthy_after:g} s"})
        return Probe(True, {"status": "live", "failing_seconds": failing,
                            "unhealthy_after": self.unhealthy_after})
