"""SIGTERM stops a worker within seconds even while its Redis writes are failing: its
Redis is stopped (SIGSTOP) with writes pending, so each write waits out its socket
timeout and is retried; past the stop deadline the worker exits as after a crash, and
a restart counts every event exactly (streams/ops/stop_deadline.py)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from streams.core.periods import parse_periods
from streams.ops.stop_deadline import CUT_SHORT_EXIT, STOP_DEADLINE_S
from tests.integration.test_event_clock import PERIODS, scenario
from tests.reference import expected_state


@pytest.mark.timeout(240)
def test_sigterm_stops_the_worker_while_redis_does_not_answer(spare_redis, deploy):
    redis_port, server = spare_redis
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS,
               RANKFLOW_REDIS=f"redis://127.0.0.1:{redis_port}/0",
               RANKFLOW_REDIS_SOCKET_TIMEOUT="2")
    messages = scenario()[:4000]
    expected = expected_state([(m.kind, m.key, m.value) for m in messages],
                              parse_periods(PERIODS))
    d.produce(messages[:2000])
    worker = d.start_worker()
    d.wait_for(lambda: int(d.meta().get("events", 0)) > 0, 120, "the first events counted")
    server.send_signal(signal.SIGSTOP)
    d.produce(messages[2000:])  # writes now pending on a Redis that does not answer
    time.sleep(6)  # a few failed attempts: the retry loop is running
    asked = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=STOP_DEADLINE_S + 10)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker still ran after SIGTERM and its deadline") from None
    finally:
        server.send_signal(signal.SIGCONT)
    took = time.monotonic() - asked
    log = worker.log.read_text(errors="replace") if worker.log else ""
    assert "writing Redis" in log, "the writes were not failing when the stop came"
    assert code == CUT_SHORT_EXIT and "the graceful stop did not finish" in log, (code, took)
    d.workers.remove(worker)  # its exit code was the deadline's, checked above
    d.start_worker()
    d.wait_counted(expected.counted, expected.dead, timeout=120)
