"""`rankflow rebuild` rewrites the Redis layout from the state after Redis lost it."""

import subprocess
import sys

import orjson
import redis

from streams.core.periods import parse_periods
from streams.dev.simulate import CATEGORIES, Message, SimulatedPlatform
from tests.integration.exactness import in_span
from tests.integration.test_event_clock import PERIODS, START, scenario
from tests.reference import expected_state


def layout(r, prefix):
    """Every contract key's content (not the feed, metrics or per-partition shares)."""
    found = {}
    for key in r.scan_iter(f"{prefix}*", count=1000):
        name = key[len(prefix):]
        kind = r.type(key)
        # (on a Redis Cluster the shares, owners and stamps are per slot: parts:, owners:...)
        if name.startswith(("changes", "metrics:", "parts:", "owners:", "stamps:")) \
                or name.endswith(":partitions"):
            continue
        if kind == "zset":
            found[name] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            found[name] = r.hgetall(key)
        elif kind == "set":
            found[name] = r.smembers(key)
    found["meta"].pop("updated_at")
    # a series' cells older than its span linger until their chunk leaves it: compare
    # the span, and a series with none in it as no series
    clock = int(found["meta"].get("clock", 0))
    for name in [n for n in found if n.startswith("series:")]:
        found[name] = in_span(found[name], name.rsplit(":", 1)[1], clock)
        if not found[name]:
            del found[name]
    return found


def test_rebuild_after_redis_lost_everything_gives_the_same_layout(deploy):
    rebuild_after_loss(deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS))


def test_rebuild_on_the_redis_cluster(cluster_deploy):
    """The same on the dev stack's Redis Cluster: its writes go by slot."""
    rebuild_after_loss(cluster_deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS))


def rebuild_after_loss(d):
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


def _dump(r, prefix):
    return {key: r.dump(key) for key in r.scan_iter(f"{prefix}*", count=1000)}


def _put_back(r, prefix, dumped):
    """Redis as an older copy of itself: exactly the keys and values it had then."""
    r.delete(*r.keys(f"{prefix}*"))
    for key, value in dumped.items():
        r.restore(key, 0, value, replace=True)


def test_rebuild_without_clear_moves_accounts_off_the_boards_of_an_older_copy(deploy):
    """Accounts moved between categories; Redis put back to a copy from before the move
    (each still on its old category's boards); `rankflow rebuild` without --clear."""
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS)
    platform = SimulatedPlatform(seed=5, accounts=60, start_ms=START, step_ms=60_000,
                                 campaign_share=0.2)
    first = [*platform.profiles(), *platform.events(3_000)]
    counts = expected_state([(m.kind, m.key, m.value) for m in first], parse_periods(PERIODS))
    d.produce(first)
    worker = d.start_worker()
    d.wait_counted(counts.counted, counts.dead, timeout=180)
    d.stop(worker)
    raw = redis.Redis.from_url(d.settings.redis)  # DUMP values are binary
    before_move = _dump(raw, d.prefix)
    old = {a: d.redis.hget(f"{d.prefix}acct:{a}", "category") for a in platform.ids[:10]}
    moved = {a: next(c for c in CATEGORIES if c != old[a]) for a in old}
    d.produce([Message("accounts", a.encode(), orjson.dumps(
        {"account_id": a, "name": f"moved {a}", "category": c, "fans": 10}))
        for a, c in moved.items()])
    worker = d.start_worker()
    d.wait_for(lambda: all(d.redis.hget(f"{d.prefix}acct:{a}", "category") == c
                           for a, c in moved.items()), 120, "the moves in Redis")
    d.stop(worker)
    expected = layout(d.redis, d.prefix)

    _put_back(raw, d.prefix, before_move)
    windows = ("1h", "24h", "7d", "30d", "all", "2018q1q3")
    stale = layout(d.redis, d.prefix)
    assert all(a in dict(stale[f"lb:{w}:cat:{old[a]}"]) for a in moved for w in windows)
    done = subprocess.run([sys.executable, "-m", "streams.ops.cli", "rebuild", "--quiet"],
                          env=d.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rebuilt = layout(d.redis, d.prefix)
    assert sorted(rebuilt) == sorted(expected)
    assert [key for key in expected if rebuilt[key] != expected[key]] == []
    for account_id, category in moved.items():
        for window in windows:
            assert account_id not in dict(rebuilt[f"lb:{window}:cat:{old[account_id]}"])
            assert account_id in dict(rebuilt[f"lb:{window}:cat:{category}"])
