"""A real worker's health endpoint: ready after recovery, not live while its Redis is stopped.

The worker runs against a redis-server of the test's own (`spare_redis`) with
`RANKFLOW_HEALTH_PORT` set, a 2 s Redis socket timeout and `RANKFLOW_UNHEALTHY_AFTER=3`:

* `/ready` answers 503 until the worker has its partitions and their tables are read,
  then 200: a worker started while the first one is stopped (SIGSTOP) waits for the
  group to give up on it (the session timeout, 6 s), then reads the tables the first
  one wrote;
* `/live` turns 503 while its Redis is stopped (SIGSTOP) with writes pending for longer
  than 3 s, and 200 again once Redis is continued (SIGCONT); the events are all counted.

Writes tests/artifacts/worker-health.json: how long each answer took to come.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest

from streams.core.periods import parse_periods
from tests.integration.conftest import ARTIFACTS
from tests.integration.test_event_clock import PERIODS, scenario
from tests.integration.test_outages import free_ports
from tests.reference import expected_state

UNHEALTHY_AFTER = 3.0
SOCKET_TIMEOUT = 2.0


def probe(port: int, path: str) -> tuple[int, dict] | None:
    """(status, body) of GET path, or None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return None


def wait_probe(d, port: int, path: str, status: int, timeout: float) -> tuple[dict, list]:
    """Poll until `path` answers `status`; its body, and every answer seen before."""
    seen: list = []
    found: dict = {}

    def answered() -> bool:
        got = probe(port, path)
        seen.append(got)
        if got is not None and got[0] == status:
            found.update(got[1])
            return True
        return False

    d.wait_for(answered, timeout, f"{path} to answer {status} (seen: {seen[-3:]})")
    return found, seen


@pytest.mark.timeout(180)
def test_ready_after_recovery_and_not_live_while_redis_is_stopped(spare_redis, deploy):
    redis_port, server = spare_redis
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS,
               RANKFLOW_REDIS=f"redis://127.0.0.1:{redis_port}/0",
               RANKFLOW_UNHEALTHY_AFTER=str(UNHEALTHY_AFTER),
               RANKFLOW_REDIS_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT))
    messages = scenario()
    periods = parse_periods(PERIODS)
    first, rest = messages[:3000], messages[3000:]
    part = expected_state([(m.kind, m.key, m.value) for m in first], periods)
    expected = expected_state([(m.kind, m.key, m.value) for m in messages], periods)
    d.produce(first)
    first_port, health_port = free_ports(2, 26800)
    d.env["RANKFLOW_HEALTH_PORT"] = str(first_port)
    wedged = d.start_worker()
    wait_probe(d, first_port, "/ready", 200, 120)
    d.wait_counted(part.counted, part.dead, timeout=60)

    # A second worker while the first is stopped: not ready until the group has
    # given up on the first and its tables are read
    wedged.send_signal(signal.SIGSTOP)
    d.env["RANKFLOW_HEALTH_PORT"] = str(health_port)
    started = time.monotonic()
    d.start_worker()
    ready, before = wait_probe(d, health_port, "/ready", 200, 120)
    seconds_to_ready = time.monotonic() - started
    wedged.kill()
    assert ready["status"] == "ready" and ready["assigned"] == list(range(8))
    not_ready = [got for got in before[:-1] if got is not None]
    assert not_ready, "the endpoint answered 200 at once: it should say 503 until recovered"
    assert all(status == 503 and body["status"] in ("starting", "recovering")
               for status, body in not_ready), not_ready
    d.wait_counted(part.counted, part.dead, timeout=60)
    live, _ = wait_probe(d, health_port, "/live", 200, 5)
    assert live["failing_seconds"] == {}

    server.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        d.produce(rest)  # writes now wait on a Redis that does not answer
        dead, _ = wait_probe(d, health_port, "/live", 503,
                             SOCKET_TIMEOUT + UNHEALTHY_AFTER + 30)
        seconds_to_unhealthy = time.monotonic() - stopped
        assert dead["status"] == "unhealthy"
        assert "writing Redis" in dead["reason"], dead
        assert dead["failing_seconds"]["writing Redis"] > UNHEALTHY_AFTER
        assert seconds_to_unhealthy > UNHEALTHY_AFTER
    finally:
        server.send_signal(signal.SIGCONT)
    continued = time.monotonic()
    wait_probe(d, health_port, "/live", 200, 15)
    seconds_to_live = time.monotonic() - continued
    d.wait_counted(expected.counted, expected.dead, timeout=60)
    assert probe(health_port, "/ready") == (200, ready)
    (ARTIFACTS / "worker-health.json").write_text(json.dumps({
        "seconds_to_ready_from_start_beside_a_stopped_worker": round(seconds_to_ready, 2),
        "not_ready_answers_before": len(not_ready),
        "unhealthy_after_s": UNHEALTHY_AFTER, "redis_socket_timeout_s": SOCKET_TIMEOUT,
        "seconds_to_503_after_sigstop": round(seconds_to_unhealthy, 2),
        "seconds_to_200_after_sigcont": round(seconds_to_live, 2),
    }, indent=2) + "\n")
