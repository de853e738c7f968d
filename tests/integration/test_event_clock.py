"""An event-clock replay: every window and board in Redis, key by key, against a reference."""

import asyncio
import time

import orjson
import pytest

from streams.dev.simulate import CAMPAIGNS, CATEGORIES, Message, SimulatedPlatform
from tests.integration.exactness import dead_letters_since, end_offsets, expected_replay

START = 1_525_000_000_000  # 2018-04-29
DAY = 86_400_000
PERIODS = "2018q1q3=2018-01-01/2018-10-01"


def scenario():
    platform = SimulatedPlatform(seed=3, accounts=150, start_ms=START, step_ms=35 * DAY / 20_000,
                                 bad_share=0.005, duplicate_share=0.01, unkeyed_share=0.02,
                                 campaign_share=0.2)
    messages = [*platform.profiles(), *platform.events(20_000)]
    end = START + 35 * DAY
    ids = platform.ids

    def late(i, account_id, age_ms, kind="view", **extra):
        body = {"event_id": f"late-{i}", "account_id": account_id, "ts": end - age_ms,
                "count": 3, **extra}
        return Message(kind, account_id.encode(), orjson.dumps(body))

    messages += [
        late(1, ids[0], 2 * 3_600_000),                     # in 24h, not in 1h
        late(2, ids[1], 40 * 60_000, campaign=CAMPAIGNS[0]),  # in 1h
        late(3, ids[2], 10 * DAY, "like"),                  # in 30d only
        late(4, ids[3], 60 * DAY, "upload", count=1),       # older than every rolling window
        late(5, "no.profile", 5 * 60_000),                  # stands on cat:unknown
        Message("accounts", ids[4].encode(), orjson.dumps(  # moves category
            {"account_id": ids[4], "name": "moved", "category": "media", "fans": 5})),
        Message("accounts", ids[5].encode(), None),         # tombstone
        Message("view", ids[6].encode(), orjson.dumps(
            {"event_id": "last", "account_id": ids[6], "ts": end, "count": 1})),
    ]
    return messages


@pytest.mark.timeout(400)
def test_event_clock_replay_matches_the_reference_in_every_window(deploy):
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS)
    messages = scenario()
    expected, clock = expected_replay(messages, PERIODS)
    d.produce(messages)
    d.start_worker()
    d.wait_counted(expected.counted, expected.dead, timeout=180)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    assert_matches_reference(d, expected, clock)


def exact_after_failover(d, expected, clock, worker, killed_at):
    """Once every event is counted and the clock is the last event's: the layout matches
    the reference and the worker still runs. Seconds since `killed_at`, the worker's log."""
    d.wait_counted(expected.counted, expected.dead, timeout=120)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    exact_s = time.monotonic() - killed_at
    time.sleep(2)  # a partition found behind is rewritten within a check or two
    assert_matches_reference(d, expected, clock)
    assert worker.poll() is None
    return exact_s, worker.log.read_text(errors="replace") if worker.log else ""


def assert_matches_reference(d, expected, clock):
    """Every board, campaign hash and account hash in Redis is what the reference says."""
    r, p = d.redis, d.prefix
    boards = ["all", *(f"cat:{c}" for c in (*CATEGORIES, "unknown")),
              *(f"campaign:{c}" for c in CAMPAIGNS)]
    for window in expected.windows:
        for board in boards:
            got = dict(r.zrange(f"{p}lb:{window}:{board}", 0, -1, withscores=True))
            assert got == expected.board(window, board, clock), (window, board)
        for campaign in CAMPAIGNS:
            h = r.hgetall(f"{p}campaign:{campaign}")
            got = [int(h[f"{window}.{f}"]) for f in ("views", "likes", "uploads", "accounts")]
            assert got == expected.campaign(campaign, window, clock), (window, campaign)
    pipe = r.pipeline(transaction=False)
    for account_id in expected.accounts:
        pipe.hgetall(f"{p}acct:{account_id}")
    for (account_id, account), h in zip(expected.accounts.items(), pipe.execute(),
                                        strict=True):
        assert int(h["fans"]) == account.fans
        for window in expected.windows:
            views, likes, uploads, _ = expected.sums(account_id, window, clock)
            assert (int(h[f"{window}.views"]), int(h[f"{window}.likes"]),
                    int(h[f"{window}.uploads"])) == (views, likes, uploads), (account_id, window)
            assert float(h[f"{window}.index"]) == expected.index(account_id, window, clock)
        if account.listed:
            assert h["category"] == account.category
        else:
            assert "category" not in h


@pytest.mark.timeout(400)
def test_an_event_far_in_the_future_is_dead_lettered_and_the_boards_stay(deploy):
    """One bad replay message (an event of the year 2286) must not move the event clock
    for good and empty every rolling board: it is dead-lettered, as under the wall clock."""
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PERIODS=PERIODS)
    messages = scenario()
    expected, clock = expected_replay(messages, PERIODS)
    account_id = next(iter(expected.accounts))
    future = Message("view", account_id.encode(), orjson.dumps(
        {"event_id": "from-2286", "account_id": account_id, "ts": 9_999_999_999_999}))
    half = len(messages) // 2
    since = asyncio.run(end_offsets(d.settings.bootstrap_servers, d.topics.dlq))
    d.produce([*messages[:half], future, *messages[half:]])
    d.start_worker()
    d.wait_counted(expected.counted, expected.dead + 1, timeout=180)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    assert_matches_reference(d, expected, clock)
    letters = dead_letters_since(d.settings.bootstrap_servers, d.topics.dlq, since)
    (letter,) = [x for x in letters if "from-2286" in x["value"]]
    assert "more than 5 minutes after the time it was produced" in letter["reason"]
