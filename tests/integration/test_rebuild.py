"""`rankflow rebuild` rewrites the Redis layout from the state after Redis lost it."""

import subprocess
import sys

from streams.core.periods import parse_periods
from tests.integration.test_event_clock import PERIODS, scenario
from tests.reference import expected_state


def layout(r, prefix):
    """Every contract key's content (not the feed, metrics or per-partition shares)."""
    found = {}
    for key in r.scan_iter(f"{prefix}*", count=1000):
        name = key[len(prefix):]
        kind = r.type(key)
        if name.startswith(("changes", "metrics:")) or name.endswith(":partitions"):
            continue
        if kind == "zset":
            found[name] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            found[name] = r.hgetall(key)
        elif kind == "set":
            found[name] = r.smembers(key)
    found["meta"].pop("updated_at")
    return found


def test_rebuild_after_redis_lost_everything_gives_the_same_layout(deploy):
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS)
    messages = scenario()
    expected = expected_state([(m.kind, m.key, m.value) for m in messages],
                              parse_periods(PERIODS))
    d.produce(messages)
    worker = d.start_worker()
    d.wait_counted(expected.counted, expected.dead, timeout=180)
    clock = max(e.ts for a in expected.accounts.values() for _, e in a.events)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    d.stop(worker)
    before = layout(d.redis, d.prefix)
    assert len(before) > 100
    d.redis.delete(*d.redis.keys(f"{d.prefix}*"))
    done = subprocess.run([sys.executable, "-m", "streams.ops.cli", "rebuild", "--quiet"],
                          env=d.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rebuilt" in done.stdout
    assert layout(d.redis, d.prefix) == before
