"""A scenario with known boards, through a real worker, checked key by key in Redis."""

import time

import orjson

from streams.core.periods import parse_periods
from streams.core.scoring import influence_index
from streams.core.windows import Windows
from streams.dev.simulate import Message

NOW = int(time.time() * 1000)
IN_2018 = 1_525_000_000_000  # 2018-04-29, inside 2018q1q3
PERIODS = "2018q1q3=2018-01-01/2018-10-01"


def profile(account_id, category, fans, name=None):
    return Message("accounts", account_id.encode(), orjson.dumps(
        {"account_id": account_id, "name": name or f"name of {account_id}",
         "category": category, "fans": fans}))


def event(kind, account_id, event_id, count=1, ts=NOW - 60_000, key=..., **extra):
    body = {"event_id": event_id, "account_id": account_id, "ts": ts, "count": count, **extra}
    return Message(kind, account_id.encode() if key is ... else key, orjson.dumps(body))


SCENARIO = [
    profile("gov.a", "police", 1000, "交警在线"),
    profile("gov.b", "media", 0),
    profile("gov.d", "police", 5),
    profile("gov.e", "police", 50),
    profile("gov.f", "central", 2_000_000, "中国长安网"),
    event("view", "gov.a", "a1", 10, ts=IN_2018),
    event("view", "gov.a", "a2", 5, campaign="c1"),
    event("view", "gov.a", "a3", 1),
    event("like", "gov.a", "a4", 2),
    event("like", "gov.a", "a5", -1),
    event("upload", "gov.a", "a6", ts=IN_2018),
    event("upload", "gov.a", "a7"),
    event("follow", "gov.a", "a8", 3),
    event("follow", "gov.a", "a9", -1),
    event("view", "gov.b", "b1", 100, campaign="c1", key=None),  # unkeyed: re-keyed
    event("like", "gov.b", "b2", 1, campaign="c1"),
    event("view", "gov.c", "c1", 1),  # no profile: stands on all and cat:unknown
    event("view", "gov.d", "d1", 7),
    Message("accounts", b"gov.d", None),  # tombstone: off every board, events still count
    event("view", "gov.e", "e1", 3),
    profile("gov.e", "media", 50),  # moves from police to media
    event("view", "gov.a", "a2", 5, campaign="c1"),  # duplicate of a2: dead-lettered
    Message("view", b"gov.a", b"not json"),
]


def test_known_scenario_boards_and_hashes(deploy):
    check_known_scenario(deploy(RANKFLOW_PERIODS=PERIODS))


def test_known_scenario_on_the_redis_cluster(cluster_deploy):
    """The same, the worker writing to the dev stack's Redis Cluster (by slot:
    streams/sink/cluster.py), read back through the cluster client."""
    check_known_scenario(cluster_deploy(RANKFLOW_PERIODS=PERIODS))


def check_known_scenario(d):
    windows = Windows(parse_periods(PERIODS))
    d.produce(SCENARIO)
    d.start_worker()
    d.wait_counted(events=14, dead=2)
    r, p = d.redis, d.prefix

    recent = {"gov.a": (6, 1, 1, 1002), "gov.b": (100, 1, 0, 0), "gov.c": (1, 0, 0, 0),
              "gov.e": (3, 0, 0, 50), "gov.f": (0, 0, 0, 2_000_000)}  # without the 2018 events
    expected = {  # window -> account -> (views, likes, uploads, fans)
        "1h": recent, "24h": recent, "7d": recent, "30d": recent,
        "all": {"gov.a": (16, 1, 2, 1002), "gov.b": (100, 1, 0, 0), "gov.c": (1, 0, 0, 0),
                "gov.e": (3, 0, 0, 50), "gov.f": (0, 0, 0, 2_000_000)},
        "2018q1q3": {"gov.a": (10, 0, 1, 1002), "gov.b": (0, 0, 0, 0), "gov.c": (0, 0, 0, 0),
                     "gov.e": (0, 0, 0, 50), "gov.f": (0, 0, 0, 2_000_000)},
    }
    categories = {"gov.a": "police", "gov.b": "media", "gov.c": "unknown", "gov.e": "media",
                  "gov.f": "central"}
    for window, accounts in expected.items():
        scores = {a: influence_index(v, lk, u, f, windows.days(window))
                  for a, (v, lk, u, f) in accounts.items()}
        assert r.zrange(f"{p}lb:{window}:all", 0, -1, withscores=True) == sorted(
            scores.items(), key=lambda kv: (kv[1], kv[0]))
        for category in ("police", "media", "unknown", "central"):
            members = {a: s for a, s in scores.items() if categories[a] == category}
            assert dict(r.zrange(f"{p}lb:{window}:cat:{category}", 0, -1,
                                 withscores=True)) == members, (window, category)
        for account_id, (views, likes, uploads, _fans) in accounts.items():
            h = r.hgetall(f"{p}acct:{account_id}")
            assert (int(h[f"{window}.views"]), int(h[f"{window}.likes"]),
                    int(h[f"{window}.uploads"])) == (views, likes, uploads)
            assert float(h[f"{window}.index"]) == scores[account_id]

    assert r.hgetall(f"{p}acct:gov.a") | {} == {
        **r.hgetall(f"{p}acct:gov.a"), "name": "交警在线", "category": "police", "fans": "1002"}
    assert r.hget(f"{p}acct:gov.c", "category") == "unknown"
    assert r.hget(f"{p}acct:gov.c", "name") is None
    tomb = r.hgetall(f"{p}acct:gov.d")
    assert tomb["all.views"] == "7" and "category" not in tomb and "name" not in tomb
    assert r.zscore(f"{p}lb:all:cat:police", "gov.e") is None

    for window in ("1h", "24h", "7d", "30d", "all"):
        assert dict(r.zrange(f"{p}lb:{window}:campaign:c1", 0, -1, withscores=True)) == {
            "gov.a": 5.0, "gov.b": 100.0}
    assert r.exists(f"{p}lb:2018q1q3:campaign:c1") == 0
    campaign = r.hgetall(f"{p}campaign:c1")
    assert {k: campaign[k] for k in ("all.views", "all.likes", "all.uploads", "all.accounts")} \
        == {"all.views": "105", "all.likes": "1", "all.uploads": "0", "all.accounts": "2"}
    assert campaign["2018q1q3.accounts"] == "0"

    minute = (NOW - 60_000) // 60_000 * 60_000
    for step, t in (("1m", minute), ("1h", minute // 3_600_000 * 3_600_000)):
        cells = r.hgetall(f"{p}series:c1:{step}")  # gov.a and gov.b: their partitions' shares
        sums = [sum(int(v.split(",")[i]) for v in cells.values()) for i in range(4)]
        assert {k.split(":")[0] for k in cells} == {str(t)} and sums == [105, 1, 0, 2], step

    meta = d.meta()
    assert meta["events"] == "14" and meta["dlq"] == "2"
    assert abs(int(meta["clock"]) - time.time() * 1000) < 120_000
    assert int(meta["updated_at"]) <= time.time() * 1000
