"""Redis stops answering for 30 s (`DEBUG SLEEP 30`) in the middle of a replay.

The worker's Redis calls time out (`RANKFLOW_REDIS_SOCKET_TIMEOUT`, 10 s), it logs
`writing Redis: no answer for N s (...); retrying in ...` meanwhile, and once Redis
answers again it writes the rest within seconds and ends with the exact state of the
brute-force reference. Against a redis-server of the test's own (`spare_redis`).
Writes tests/artifacts/redis-stall.json: seconds from the end of the sleep to the
first write landing and to every event counted.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from streams.core.periods import parse_periods
from tests.integration.conftest import ARTIFACTS
from tests.integration.test_event_clock import PERIODS, assert_matches_reference, scenario
from tests.reference import expected_state

SLEEP_S = 30
#: seconds from the end of the sleep to every event counted: the retry after a timeout
#: comes within 0.8 s (streams/worker/retry.py), then the backlog's batches
WITHIN_S = 5.0 + 3.0


@pytest.mark.timeout(180)
def test_the_worker_rides_out_redis_not_answering_for_30_s(spare_redis, deploy):
    port, _ = spare_redis
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS,
               RANKFLOW_REDIS=f"redis://127.0.0.1:{port}/0")
    messages = scenario()
    periods = parse_periods(PERIODS)
    first, rest = messages[:3000], messages[3000:]
    part = expected_state([(m.kind, m.key, m.value) for m in first], periods)
    expected = expected_state([(m.kind, m.key, m.value) for m in messages], periods)
    clock = max(e.ts for a in expected.accounts.values() for _, e in a.events)
    d.produce(first)
    worker = d.start_worker()
    d.wait_counted(part.counted, part.dead, timeout=120)

    # DEBUG SLEEP blocks its own connection for the whole sleep: from a thread
    def sleep() -> None:
        redis.Redis(port=port, socket_timeout=SLEEP_S + 30).execute_command(
            "DEBUG", "SLEEP", SLEEP_S)

    sleeper = threading.Thread(target=sleep)
    sleeper.start()
    time.sleep(0.2)
    d.produce(rest)  # Kafka only: the worker reads them and blocks on Redis
    sleeper.join()
    woke = time.monotonic()
    assert worker.poll() is None, "the worker exited while Redis slept"
    d.wait_for(lambda: int(d.meta().get("events", 0)) > part.counted, 30,
               "the first write after the sleep")
    first_write = time.monotonic() - woke
    d.wait_counted(expected.counted, expected.dead, timeout=60)
    all_counted = time.monotonic() - woke
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    assert_matches_reference(d, expected, clock)
    log = (ARTIFACTS / f"{d.name}-worker0.log").read_text(errors="replace")
    (ARTIFACTS / "redis-stall.json").write_text(json.dumps({
        "sleep_s": SLEEP_S, "events_after_the_sleep_began": expected.counted - part.counted,
        "seconds_to_first_write_after_the_sleep": round(first_write, 2),
        "seconds_to_all_counted_after_the_sleep": round(all_counted, 2),
    }, indent=2) + "\n")
    assert "writing Redis: no answer for 10 s (Timeout reading from" in log, log[-3000:]
    assert "writing Redis works again after" in log
    assert first_write < 5.0, first_write
    assert all_counted < WITHIN_S, all_counted
    assert "Traceback" not in log
