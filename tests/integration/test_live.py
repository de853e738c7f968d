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


def views(account_id, event_id, count):
    return Message("view", account_id.encode(), orjson.dumps(
        {"event_id": event_id, "account_id": account_id, "ts": NOW, "count": count}))


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
    with api_process(d, RANKFLOW_API_HISTORY_INTERVAL="1") as url:
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
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    d, url = live
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        page.goto(url + "/")
        page.wait_for_selector("#rows tr")
        assert page.inner_text("#rows tr:first-child td:nth-child(3)") == "gov.7"
        with ThreadPoolExecutor(1) as pool:  # playwright's own loop runs in this thread
            pool.submit(d.produce, [views("gov.0", "big", 900_000)]).result()  # last to first
        page.wait_for_function(
            "document.querySelector('#rows tr td:nth-child(3)').textContent === 'gov.0'",
            timeout=20_000)
        assert "▲" in page.inner_text("#rows tr:first-child td:nth-child(2)")
        page.click("#rows tr:first-child")
        page.wait_for_selector("#detail svg.spark", timeout=20_000)  # its index history
        assert "账号 gov.0" in page.inner_text("#detail h2")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live-page.png"))
        if os.environ.get("RANKFLOW_SCREENSHOT"):
            page.screenshot(path=os.environ["RANKFLOW_SCREENSHOT"])
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
