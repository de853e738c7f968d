"""Redis loses its data (FLUSHALL, a restart without persistence): the worker rewrites it.

Runs against a redis-server of its own, with no persistence, so flushing and killing it
disturbs no other test. The worker notices the generation marker is gone and rewrites
the whole layout from its state while it goes on counting new events.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streams.core.periods import parse_periods
from tests.integration.conftest import ARTIFACTS
from tests.integration.test_event_clock import PERIODS, assert_matches_reference, scenario
from tests.integration.test_rebuild import layout
from tests.reference import expected_state

PORT = 16392


def start_redis(tmp: Path, port: int = PORT) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own, with no persistence but a `SAVE` into `tmp`
    (which a restart there loads); DEBUG allowed from loopback (test_redis_stall.py)."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp),
                             "--enable-debug-command", "local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the test's redis-server did not start")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    servers = {"redis": start_redis(tmp_path)}
    yield servers
    servers["redis"].kill()
    servers["redis"].wait()


def restored_within(d, before, timeout: float) -> float:
    started = time.monotonic()
    d.wait_for(lambda: d.meta().get("events") == before["meta"]["events"]
               and layout(d.redis, d.prefix) == before, timeout, "the layout to be rewritten")
    return time.monotonic() - started


@pytest.mark.timeout(300)
def test_worker_rewrites_redis_after_flushall_and_restart(own_redis, deploy, tmp_path):
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS,
               RANKFLOW_REDIS=f"redis://127.0.0.1:{PORT}/0")
    messages = scenario()
    periods = parse_periods(PERIODS)
    first, rest = messages[:len(messages) // 2], messages[len(messages) // 2:]
    part = expected_state([(m.kind, m.key, m.value) for m in first], periods)
    expected = expected_state([(m.kind, m.key, m.value) for m in messages], periods)
    clock = max(e.ts for a in expected.accounts.values() for _, e in a.events)
    d.produce(first)
    worker = d.start_worker()
    d.wait_counted(part.counted, part.dead, timeout=180)

    # Lost while events keep coming: the rewrite and the new batches both land.
    d.redis.flushall()
    d.produce(rest)
    d.wait_counted(expected.counted, expected.dead, timeout=180)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    assert_matches_reference(d, expected, clock)
    before = layout(d.redis, d.prefix)

    # Lost while idle: FLUSHALL, then a restart with no persistence.
    d.redis.flushall()
    after_flush = restored_within(d, before, 30)
    own_redis["redis"].kill()
    own_redis["redis"].wait()
    own_redis["redis"] = start_redis(tmp_path)
    after_restart = restored_within(d, before, 60)
    assert worker.poll() is None
    log = (ARTIFACTS / f"{d.name}-worker0.log").read_text()
    assert log.count("Redis has lost its data") >= 2

    # Lost while the worker was away: it rewrites what it recovers from the changelog.
    d.stop(worker)
    d.redis.flushall()
    d.start_worker()
    after_worker_restart = restored_within(d, before, 120)
    (ARTIFACTS / "redis-loss.json").write_text(json.dumps({
        "accounts": len(expected.accounts),
        "seconds_to_rewrite_after_flushall": round(after_flush, 2),
        "seconds_to_rewrite_after_restart": round(after_restart, 2),
        "seconds_to_layout_after_worker_restart": round(after_worker_restart, 2),
    }, indent=2) + "\n")
