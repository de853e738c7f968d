"""The live feed and the live page, end to end: a real worker, `rankflow api`, Chromium."""

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from streams.dev.simulate import Message
from tests.integration.conftest import ARTIFACTS, api_process, sse_events

NOW = int(time.time() * 1000)


def profile(account_id, fans):
    return Message("accounts", account_id.encode(), orjson.dumps(
        {"account_id": account_id, "name": f"账号 {account_id}", "category": "police",
         "fans": fans}))


def views(account_id, event_id, count, campaign=None, ts=None):
    return Message("view", account_id.encode(), orjson.dumps(
        {"event_id": event_id, "account_id": account_id, "ts": ts or NOW, "count": count,
         **({"campaign": campaign} if campaign else {})}))


#: seconds of live load over which the page's requests are counted
REQUEST_WINDOW_S = 20


@pytest.fixture
def live(deploy):
    yield from _live(deploy())


@pytest.fixture
def cluster_live(cluster_deploy):
    """The same on the dev stack's Redis Cluster (worker, API and feed)."""
    yield from _live(cluster_deploy())


def _live(d):
    d.produce([profile(f"gov.{i}", 1000 * (i + 1)) for i in range(8)])
    d.start_worker()
    d.wait_counted(events=0, dead=0, timeout=60)
    d.wait_for(lambda: d.redis.zcard(f"{d.prefix}lb:24h:all") == 8, 60, "8 accounts listed")
    with api_process(d) as url:
        yield d, url


def read_events(response, want, timeout):
    """SSE events (kind, id, data) from a streaming response until `want` or timeout."""
    events = []
    deadline = time.monotonic() + timeout
    for event in sse_events(response.iter_lines()):
        events.append(event)
        if len(events) >= want or time.monotonic() > deadline:
            break
    return events


def test_the_feed_announces_board_changes_and_resumes(live):
    check_the_feed(*live)


def test_the_feed_on_the_redis_cluster(cluster_live):
    check_the_feed(*cluster_live)


def check_the_feed(d, url):
    params = {"window": "24h", "board": "all"}
    with httpx.stream("GET", f"{url}/api/stream", params=params, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        d.produce([views("gov.0", "v1", 5)])
        (kind, first_id, data), = read_events(response, 1, 20)
    assert kind == "change" and data["boards"] == ["24h:all"]
    d.produce([views("gov.1", "v2", 5)])
    d.wait_counted(events=2, dead=0)
    headers = {"Last-Event-ID": first_id}
    with httpx.stream("GET", f"{url}/api/stream", params=params, headers=headers,
                      timeout=30) as response:
        (kind, later_id, data), = read_events(response, 1, 10)
    assert kind == "change" and later_id > first_id, "the missed change is replayed"
    bad = httpx.get(f"{url}/api/stream", params={"window": "5m"})
    assert bad.status_code == 422 and "error" in bad.json()


def test_the_page_updates_live_in_chromium(live):
    """The page follows the board's top-N feed: under a change every half second it
    reads the API a few times per panel refresh, not once per change; a campaign board
    shows integer views, the campaign's series with time axes and its movers; an account
    its rank over time. Screenshots: tests/artifacts (docs/ with RANKFLOW_SCREENSHOT)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    d, url = live
    minute = 60_000
    d.produce([views(f"gov.{i}", f"c{i}-{m}", i * (m + 1), "spring", NOW - m * minute)
               for i in range(1, 4) for m in range(30)])
    d.wait_for(lambda: d.redis.exists(f"{d.prefix}lb:24h:campaign:spring"), 30,
               "the campaign board")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url.removeprefix(url).split("?")[0]))
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('#rows tr').length === 8")

        # a change on the board every half second for REQUEST_WINDOW_S
        changes = [views(f"gov.{i % 8}", f"load-{i}", 1) for i in range(2 * REQUEST_WINDOW_S)]
        before = len(requests)
        with ThreadPoolExecutor(1) as pool:  # playwright's own loop runs in this thread:
            producing = pool.submit(d.produce, changes, 2.0)
            while not producing.done():  # it takes the page's requests while it waits
                page.wait_for_timeout(250)
            producing.result()
        page.wait_for_timeout(1000)
        counted = requests[before:]
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "page-requests.json").write_bytes(orjson.dumps({
            "changes": len(changes), "seconds": REQUEST_WINDOW_S, "requests": len(counted),
            "by_path": {path: counted.count(path) for path in sorted(set(counted))}},
            option=orjson.OPT_INDENT_2))
        assert counted.count("/api/leaderboard") <= REQUEST_WINDOW_S // 5 + 2, \
            "the table reads the leaderboard at most every 5 s, not at each change"

        with ThreadPoolExecutor(1) as pool:
            pool.submit(d.produce, [views("gov.0", "big", 900_000)]).result()  # last to first
        page.wait_for_function(
            "document.querySelector('#rows tr td:nth-child(3)').textContent === 'gov.0'",
            timeout=20_000)
        assert "▲" in page.inner_text("#rows tr:first-child td:nth-child(2)")
        page.wait_for_function(  # its counts from the leaderboard, at most 5 s later
            "document.querySelector('#rows tr td:nth-child(7)').textContent === '900,005'",
            timeout=20_000)
        page.click("#rows tr:first-child")
        page.wait_for_selector("#detail .rank-chart svg.chart", timeout=20_000)
        assert "账号 gov.0" in page.inner_text("#detail h2")
        assert (page.text_content("#detail .rank-chart text.value") or "").startswith("#")
        page.screenshot(path=str(ARTIFACTS / "live-page.png"))
        if os.environ.get("RANKFLOW_SCREENSHOT"):
            page.screenshot(path=os.environ["RANKFLOW_SCREENSHOT"] + "/live-page.png")

        page.select_option("#board", "campaign:spring")
        page.wait_for_selector("#campaign-views svg.chart", timeout=20_000)
        assert page.inner_text("#score-head") == "views (campaign)"
        scores = page.eval_on_selector_all("#rows tr td:nth-child(6)",
                                           "cells => cells.map(c => c.textContent)")
        assert scores and all(s.replace(",", "").isdigit() for s in scores), scores
        ticks = page.eval_on_selector_all("#campaign-views text.tick",
                                          "t => t.map(x => x.textContent)")
        assert len(ticks) == 3 and all(":" in t for t in ticks), ticks
        page.wait_for_selector("#campaign-accounts svg.chart")
        with ThreadPoolExecutor(1) as pool:  # gov.0 enters the campaign at the bottom, then tops it
            pool.submit(d.produce, [views("gov.0", "spring-late", 1, "spring")]).result()
            page.wait_for_function("document.querySelectorAll('#rows tr').length === 4",
                                   timeout=20_000)
            pool.submit(d.produce, [views("gov.0", "spring-big", 50_000, "spring")]).result()
        page.wait_for_function(
            "document.querySelector('#movers li').textContent.startsWith('gov.0')",
            timeout=20_000)
        page.wait_for_function(  # names and counts from the leaderboard, at most 5 s later
            "[...document.querySelectorAll('#rows td.name')].every(td => td.textContent)",
            timeout=20_000)
        assert "campaign:spring" in page.inner_text("#detail")  # its rank on this board
        page.screenshot(path=str(ARTIFACTS / "live-page-campaign.png"))
        if os.environ.get("RANKFLOW_SCREENSHOT"):
            page.screenshot(path=os.environ["RANKFLOW_SCREENSHOT"] + "/live-page-campaign.png")
        browser.close()


def test_metrics_include_the_workers_own(live):
    d, url = live
    d.produce([views("gov.2", "m1", 3)])
    d.wait_counted(events=1, dead=0)

    def worker_metrics():
        text = httpx.get(f"{url}/metrics").text
        return "rankflow_worker_batches_total{worker=" in text and text

    d.wait_for(worker_metrics, 15, "the worker's metrics snapshot")
    text = worker_metrics()
    assert "rankflow_worker_event_to_redis_seconds_bucket" in text
    assert 'le="+Inf"' in text
    assert "rankflow_worker_consumer_lag" in text
    assert "rankflow_events_counted 1.0" in text


def test_every_api_process_answers_the_same_campaign_series(live):
    """The series come from Redis, written by the workers: a second API process, and one
    started after the first answered, give the same points, the exact sums."""
    d, url = live
    minute = 60_000
    d.produce([views(f"gov.{i}", f"autumn-{i}-{m}", i + 1, "autumn", NOW - m * minute)
               for i in range(3) for m in range(10)])
    want = [{"t": (NOW - m * minute) // minute * minute, "views": 6, "likes": 0,
             "uploads": 0, "accounts": 3} for m in reversed(range(10))]

    def series(base: str, step: str = "1m") -> list:
        return httpx.get(f"{base}/api/campaigns/autumn/series", params={"step": step},
                         timeout=5).json().get("points", [])

    d.wait_for(lambda: series(url) == want, 30, "the campaign's series")
    hour = series(url, "1h")
    assert sum(p["views"] for p in hour) == 60 and {p["accounts"] for p in hour} == {3}
    with api_process(d) as other:
        assert (series(other), series(other, "1h")) == (want, hour)
    with api_process(d) as restarted:
        assert (series(restarted), series(restarted, "1h")) == (want, hour)
