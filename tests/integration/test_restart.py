"""Stop a worker in the middle of a replay, start it again: nothing lost or counted twice.

State comes back from the changelogs (faust table recovery); the offsets kept in state
make the replayed tail count once; duplicates stay caught across the restart.
"""

import signal
import time

import pytest

from streams.core.periods import parse_periods
from streams.dev.simulate import SimulatedPlatform
from tests.reference import expected_state

PERIODS = "recent=2020-01-01/2100-01-01"
FIXED = ("all", "recent")  # rolling windows move with the wall clock: see test_windows


def replay(n, seed=11):
    platform = SimulatedPlatform(seed=seed, accounts=400,
                                 start_ms=int(time.time() * 1000) - 86_400_000, step_ms=1,
                                 bad_share=0.01, duplicate_share=0.02, unkeyed_share=0.02)
    return [*platform.profiles(), *platform.events(n)]


def assert_redis_matches(d, messages):
    expected = expected_state([(m.kind, m.key, m.value) for m in messages],
                              parse_periods(PERIODS))
    d.wait_counted(expected.counted, expected.dead, timeout=180)
    r, p = d.redis, d.prefix
    for window in FIXED:
        for board in ("all", "cat:police", "cat:unknown", "campaign:dagong-jiangren"):
            got = dict(r.zrange(f"{p}lb:{window}:{board}", 0, -1, withscores=True))
            assert got == expected.board(window, board, 0), (window, board)
    pipe = r.pipeline(transaction=False)
    for account_id in expected.accounts:
        pipe.hgetall(f"{p}acct:{account_id}")
    for (account_id, account), h in zip(expected.accounts.items(), pipe.execute(),
                                        strict=True):
        sums = expected.sums(account_id, "all", 0)[:3]
        assert [int(h["all.views"]), int(h["all.likes"]), int(h["all.uploads"])] == sums
        assert int(h["fans"]) == account.fans, account_id


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_stopped_mid_replay_ends_exact(deploy, sig):
    d = deploy(RANKFLOW_PERIODS=PERIODS)
    messages = replay(150_000)
    d.produce(messages)
    first = d.start_worker()
    d.wait_for(lambda: int(d.meta().get("events", 0)) >= 10_000, 90, "10,000 events counted")
    d.stop(first, sig)
    stopped_at = int(d.meta()["events"])
    d.start_worker()
    assert_redis_matches(d, messages)
    assert stopped_at < 145_000, "the worker was stopped before the end of the replay"


def test_duplicates_are_caught_after_a_restart(deploy):
    d = deploy(RANKFLOW_PERIODS=PERIODS)
    messages = replay(3_000, seed=5)
    d.produce(messages)
    first = d.start_worker()
    expected = expected_state([(m.kind, m.key, m.value) for m in messages])
    d.wait_counted(expected.counted, expected.dead)
    d.stop(first)
    again = [m for m in messages if m.kind == "view"][:200]  # producer redelivers
    d.produce(again)
    d.start_worker()
    d.wait_counted(expected.counted, expected.dead + len(again))
    assert_redis_matches(d, messages + again)
