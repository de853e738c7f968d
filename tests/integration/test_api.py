"""The read API against the real Redis holding a known state: ranks, ties, paging, errors."""

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import redis
import redis.cluster
from fastapi.testclient import TestClient

from streams.api.app import create_api
from streams.api.reader import competition_ranks
from streams.ops.settings import Settings

SCORES = {"a": 10.0, "b": 10.0, "c": 8.0, "d": 5.0, "e": 5.0, "f": 5.0, "g": 1.0}


@pytest.fixture(params=["redis", "redis-cluster"])
def api(stack, request):
    """The API over a known layout, on the single Redis and on the dev stack's cluster."""
    prefix = f"api{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        settings = Settings(prefix=prefix, redis=stack.redis)
        r = redis.Redis.from_url(stack.redis, decode_responses=True)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        settings = Settings(prefix=prefix, redis=cluster.redis, redis_cluster=True)
        r = redis.cluster.RedisCluster.from_url(cluster.redis, decode_responses=True)
    for window in ("24h", "all"):
        r.zadd(f"{prefix}lb:{window}:all", SCORES)
        r.zadd(f"{prefix}lb:{window}:cat:police", {k: SCORES[k] for k in "abd"})
    r.zadd(f"{prefix}lb:24h:campaign:c1", {"a": 3, "c": 7})
    r.sadd(f"{prefix}categories", "police", "media")
    r.sadd(f"{prefix}campaigns", "c1")
    r.sadd(f"{prefix}acct-campaigns:a", "c1")
    r.sadd(f"{prefix}acct-campaigns:c", "c1")
    for i, account_id in enumerate(SCORES):
        r.hset(f"{prefix}acct:{account_id}", mapping={
            "name": f"name {account_id}", "category": "police" if account_id in "abd" else "media",
            "fans": 100 + i, "24h.views": 10 * i, "24h.likes": i, "24h.uploads": 1,
            "24h.index": SCORES[account_id], "all.index": SCORES[account_id]})
    r.hset(f"{prefix}campaign:c1", mapping={"24h.views": 10, "24h.likes": 2,
                                            "24h.uploads": 1, "24h.accounts": 2})
    r.hset(f"{prefix}meta", mapping={"events": 42, "dlq": 3, "clock": 1,
                                     "updated_at": int(time.time() * 1000)})
    with TestClient(create_api(settings)) as client:
        client.redis, client.prefix = r, prefix  # for tests that add to the layout
        yield client
    r.delete(*r.keys(f"{prefix}*"))


def ranks(body):
    return [(e["account_id"], e["rank"]) for e in body["entries"]]


def test_competition_ranking_and_paging(api):
    body = api.get("/api/leaderboard", params={"window": "24h"}).json()
    assert body["total"] == 7
    assert [e["rank"] for e in body["entries"]] == [1, 1, 3, 4, 4, 4, 7]
    first = body["entries"][0]
    assert first["account_id"] == "b" and first["name"] == "name b"
    assert (first["views"], first["likes"], first["fans"], first["uploads"]) == (10, 1, 101, 1)
    page = api.get("/api/leaderboard", params={"window": "24h", "offset": 1, "limit": 2}).json()
    assert [e["rank"] for e in page["entries"]] == [1, 3]
    page = api.get("/api/leaderboard", params={"window": "24h", "offset": 4, "limit": 5}).json()
    assert [e["rank"] for e in page["entries"]] == [4, 4, 7]
    assert api.get("/api/leaderboard", params={"offset": 100}).json()["entries"] == []


def test_category_and_campaign_boards(api):
    body = api.get("/api/leaderboard", params={"window": "all", "board": "cat:police"}).json()
    assert ranks(body) == [("b", 1), ("a", 1), ("d", 3)]
    body = api.get("/api/leaderboard", params={"board": "campaign:c1"}).json()
    assert ranks(body) == [("c", 1), ("a", 2)]
    assert body["entries"][0]["score"] == 7.0


def test_neighbourhood(api):
    body = api.get("/api/leaderboard/around", params={"account_id": "e", "radius": 1}).json()
    assert body["rank"] == 4
    assert ranks(body) == [("f", 4), ("e", 4), ("d", 4)]
    body = api.get("/api/leaderboard/around", params={"account_id": "b", "radius": 2}).json()
    assert ranks(body) == [("b", 1), ("a", 1), ("c", 3)]
    missing = api.get("/api/leaderboard/around", params={"account_id": "zz"})
    assert missing.status_code == 404 and "error" in missing.json()


def test_account_detail(api):
    body = api.get("/api/accounts/c").json()
    assert body["name"] == "name c" and body["category"] == "media" and body["fans"] == 102
    assert body["windows"]["24h"] == {"views": 20, "likes": 2, "uploads": 1, "index": 8.0}
    assert {(r["window"], r["board"], r["rank"]) for r in body["ranks"]} == {
        ("24h", "all", 3), ("all", "all", 3), ("24h", "campaign:c1", 1)}
    assert api.get("/api/accounts/nobody").status_code == 404


def test_campaign_detail(api):
    body = api.get("/api/campaigns/c1").json()
    day = body["windows"]["24h"]
    assert (day["views"], day["likes"], day["uploads"], day["accounts"]) == (10, 2, 1, 2)
    assert [e["account_id"] for e in day["top"]] == ["c", "a"]
    assert api.get("/api/campaigns/none").status_code == 404


def test_campaign_series_sum_the_partitions_in_the_span_ascending(api):
    """Cells `{bucket ms}:{partition}` summed per bucket; those older than the span of
    the clock in `meta` left out (they linger until their chunk leaves)."""
    client, prefix = api.redis, api.prefix
    clock = 1_700_000_000_000
    minute, hour = clock // 60_000 * 60_000, clock // 3_600_000 * 3_600_000
    old = minute - 1440 * 60_000
    client.hset(f"{prefix}meta", "clock", clock)
    client.hset(f"{prefix}series:c1:1m", mapping={
        f"{minute}:0": "5,1,0,1", f"{minute}:3": "2,0,1,1", f"{minute - 60_000}:3": "0,0,0,1",
        f"{old}:0": "9,9,9,9"})
    client.hset(f"{prefix}series:c1:1h", mapping={f"{hour}:1": "7,1,1,2"})
    body = api.get("/api/campaigns/c1/series").json()
    assert body == {"campaign": "c1", "step": "1m", "points": [
        {"t": minute - 60_000, "views": 0, "likes": 0, "uploads": 0, "accounts": 1},
        {"t": minute, "views": 7, "likes": 1, "uploads": 1, "accounts": 2}]}
    assert api.get("/api/campaigns/c1/series", params={"step": "1h"}).json()["points"] == [
        {"t": hour, "views": 7, "likes": 1, "uploads": 1, "accounts": 2}]
    missing = api.get("/api/campaigns/none/series")
    assert missing.status_code == 404 and "error" in missing.json()
    bad = api.get("/api/campaigns/c1/series", params={"step": "5m"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid parameters"
    assert "/api/campaigns/{campaign}/series" in api.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("path,params,status", [
    ("/api/leaderboard", {"window": "2h"}, 422),
    ("/api/leaderboard", {"board": "cats:x"}, 422),
    ("/api/leaderboard", {"board": "cat:bad name"}, 422),
    ("/api/leaderboard", {"board": "campaign:"}, 422),
    ("/api/leaderboard", {"offset": -1}, 422),
    ("/api/leaderboard", {"limit": 0}, 422),
    ("/api/leaderboard", {"limit": 10**9}, 422),
    ("/api/leaderboard", {"limit": "ten"}, 422),
    ("/api/leaderboard", {"window": "x" * 5000}, 422),
    ("/api/leaderboard/around", {}, 422),
    ("/api/leaderboard/around", {"account_id": "a b"}, 422),
    ("/api/leaderboard/around", {"account_id": "a", "radius": 51}, 422),
    ("/api/accounts/" + "x" * 65, {}, 422),
    ("/api/accounts/bad%20id", {}, 422),
    ("/api/campaigns/c1", {"top": 0}, 422),
    ("/api/stream", {"top": "ten"}, 422),
    ("/api/stream", {"top": 0}, 422),
    ("/api/stream", {"top": 101}, 422),
    ("/api/stream", {"top": 1.5}, 422),
    ("/api/stream", {"top": 5, "window": "5m"}, 422),
    ("/api/stream", {"top": 5, "board": "cats:x"}, 422),
    ("/api/stream", {"top": 5, "board": "campaign:a b"}, 422),
    ("/nope", {}, 404),
])
def test_bad_parameters_get_a_4xx_json_error(api, path, params, status):
    response = api.get(path, params=params)
    assert response.status_code == status
    assert "error" in response.json()


def test_a_top_feed_with_a_bad_last_event_id_gets_a_400(api):
    response = api.get("/api/stream", params={"top": 5}, headers={"Last-Event-ID": "x"})
    assert response.status_code == 400 and "error" in response.json()


def test_health_and_metrics(api):
    health = api.get("/healthz").json()
    assert health["status"] == "ok" and health["redis"] and health["events"] == 42
    assert 0 <= health["data_age_seconds"] < 60
    api.get("/api/leaderboard")
    text = api.get("/metrics").text
    assert "rankflow_events_counted 42.0" in text
    assert "rankflow_events_dead_lettered 3.0" in text
    assert 'rankflow_api_requests_total{route="/api/leaderboard",status="200"}' in text


def test_page_and_openapi(api):
    page = api.get("/")
    assert page.status_code == 200 and "/api/leaderboard" in page.text
    assert "http" not in page.text.split("<script>")[1], "no CDN: assets ship in the package"
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/leaderboard", "/api/leaderboard/around", "/api/accounts/{account_id}",
            "/api/campaigns/{campaign}", "/healthz"} <= set(paths)
    stream = {p["name"]: p for p in paths["/api/stream"]["get"]["parameters"]}
    assert {"window", "board", "top", "last-event-id"} <= stream.keys()
    top = stream["top"]["schema"]["anyOf"][0]
    assert (top["type"], top["minimum"], top["maximum"]) == ("integer", 1, 100)


def test_competition_ranks_function():
    assert competition_ranks([9, 9, 7, 7, 7, 1], 1, 0) == [1, 1, 3, 3, 3, 6]
    assert competition_ranks([7, 7, 1], 3, 3) == [3, 3, 6]
    assert competition_ranks([], 1, 0) == []


def test_rankflow_api_command_serves_http(stack):
    port = 18080 + os.getpid() % 1000
    env = {**os.environ, "RANKFLOW_API_PORT": str(port), "RANKFLOW_PREFIX": "apicmd:"}
    proc = subprocess.Popen([sys.executable, "-m", "streams.ops.cli", "api"], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["redis"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/api/leaderboard?window=nope").status_code \
            == 422
    finally:
        proc.terminate()
        proc.wait(timeout=10)
