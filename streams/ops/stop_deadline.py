"""The worker's stop deadline: a graceful stop that cannot finish ends the process.

A graceful stop (SIGTERM, SIGINT) finishes the running batch and its writes, then
commits. With Redis or Kafka not answering, those writes are retried without end, and
so would the stop be. Past the deadline the process exits as after a crash (SIGKILL):
nothing is lost, since the state is in the changelogs and a restart replays what was
not committed and rewrites Redis (the crash trials hold that:
tests/integration/test_crash_trials.py; the deadline itself:
tests/integration/test_stop_while_failing.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import faust

log = logging.getLogger(__name__)

#: seconds a graceful stop may take: a healthy one takes 1–3 s here; under the 30 s an
#: orchestrator (Kubernetes, docker stop -t 30) waits before its own SIGKILL
STOP_DEADLINE_S = 20.0
#: the exit code of a stop cut short (not 0: the orchestrator should know)
CUT_SHORT_EXIT = 3


def start_deadline(seconds: float, exit_now: Callable[[int], object] = os._exit) -> None:
    """Exit the process `seconds` from now unless it has exited by then."""
    def expire() -> None:
        log.error("the graceful stop did not finish within %.0f s (writes still failing: "
                  "Redis or Kafka not answering); exiting as after a crash, the restart "
                  "replays what was not committed", seconds)
        logging.shutdown()
        exit_now(CUT_SHORT_EXIT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


class DeadlinedWorker(faust.Worker):
    """faust's worker, whose stop is bounded by STOP_DEADLINE_S."""

    async def on_stop(self) -> None:
        start_deadline(STOP_DEADLINE_S)
        await super().on_stop()
