"""The top-N feed end to end: clients apply its changes during a live run (a real worker,
Kafka, Redis and `rankflow api`) and hold exactly each board's top N at the end."""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import orjson

from streams.dev.simulate import Message
from tests.integration.conftest import ARTIFACTS, api_process, sse_events

NOW = int(time.time() * 1000)
ACCOUNTS = [f"gov.{i}" for i in range(40)]
CATEGORIES = ("police", "media", "league")
EVENTS = 3000


def profile(account_id: str, i: int) -> Message:
    return Message("accounts", account_id.encode(), orjson.dumps(
        {"account_id": account_id, "name": f"账号 {account_id}",
         "category": CATEGORIES[i % 3], "fans": 500 * (i + 1)}))


def traffic(seed: int) -> list[Message]:
    """Heavy-tailed views (a third tagged with a campaign), some likes and unlikes, and a
    leading account deleted and registered again half-way (it leaves every board)."""
    rng = random.Random(seed)
    out = []
    for n in range(EVENTS):
        account_id = ACCOUNTS[min(int(rng.paretovariate(1.2)) - 1, len(ACCOUNTS) - 1)
                              if rng.random() < 0.5 else rng.randrange(len(ACCOUNTS))]
        kind = "view" if rng.random() < 0.85 else "like"
        count = int(rng.lognormvariate(5, 1.5)) + 1 if kind == "view" else rng.choice(
            (1, 2, 5, -1))
        body = {"event_id": f"e{n}", "account_id": account_id, "ts": NOW, "count": count}
        if kind == "view" and rng.random() < 0.35:
            body["campaign"] = "spring"
        out.append(Message(kind, account_id.encode(), orjson.dumps(body)))
        if n == EVENTS // 2:
            out.append(Message("accounts", b"gov.0", None))
        if n == EVENTS * 3 // 4:
            out.append(profile("gov.0", 0))
    return out


class FeedClient(threading.Thread):
    """Follows one board's top N and applies every change to its own copy. With
    `pause_after`, it disconnects after that many changes and resumes with the last id."""

    def __init__(self, url: str, window: str, board: str, top: int,
                 pause_after: int | None = None, first_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.params = url, {"window": window, "board": board, "top": top}
        self.pause_after, self.last_id = pause_after, first_id
        self.copy: dict[str, tuple[int, float]] = {}
        self.events: list[tuple[str, str | None, dict]] = []  # (kind, id, data)
        self.applied = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.snapshot_seen = threading.Event()
        self.failure: BaseException | None = None
        self.response: httpx.Response | None = None
        self.stopping = False

    def run(self) -> None:
        try:
            while self._follow():
                time.sleep(2)  # changes go on while this client is away
        except BaseException as exc:  # reported by the test, after the run
            if not self.stopping:
                self.failure = exc

    def stop(self) -> None:
        """Close the connection (uvicorn waits for open streams before it stops)."""
        self.stopping = True
        if self.response is not None:
            self.response.close()
        self.join(10)

    def _follow(self) -> bool:
        """One connection; True when it ended to resume."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        self.connections += 1
        with httpx.stream("GET", f"{self.url}/api/stream", params=self.params,
                          headers=headers, timeout=httpx.Timeout(10, read=60)) as response:
            self.response = response
            assert response.status_code == 200, response.read()
            for kind, event_id, data in sse_events(response.iter_lines()):
                self._apply(kind, event_id, data)
                if self.pause_after is not None and self.applied >= self.pause_after:
                    self.pause_after = None
                    return True
        return False

    def _apply(self, kind: str | None, event_id: str | None, data: dict) -> None:
        with self.lock:
            self.events.append((kind or "", event_id, data))
            if event_id:
                self.last_id = event_id
            if kind == "snapshot":
                self.copy = {e["account_id"]: (e["rank"], e["score"]) for e in data["entries"]}
                self.snapshot_seen.set()
            elif kind == "change":
                for account_id in data["left"]:
                    del self.copy[account_id]
                for e in data["entries"]:
                    self.copy[e["account_id"]] = (e["rank"], e["score"])
                self.applied += 1

    def held(self) -> dict[str, tuple[int, float]]:
        with self.lock:
            return dict(self.copy)


def board_top(url: str, window: str, board: str, top: int) -> dict[str, tuple[int, float]]:
    page = httpx.get(f"{url}/api/leaderboard",
                     params={"window": window, "board": board, "limit": top}).json()
    return {e["account_id"]: (e["rank"], e["score"]) for e in page["entries"]}


def mismatches(held: dict, board: dict) -> int:
    return sum(held.get(a) != board.get(a) for a in held.keys() | board.keys())


def test_clients_applying_the_changes_hold_each_top_n(deploy):
    d = deploy()
    d.produce([profile(a, i) for i, a in enumerate(ACCOUNTS)])
    d.start_worker()
    d.wait_for(lambda: d.redis.zcard(f"{d.prefix}lb:24h:all") == len(ACCOUNTS), 90,
               "every account listed")
    with api_process(d) as url:
        clients = [
            FeedClient(url, "24h", "all", 10),
            FeedClient(url, "24h", "all", 10),  # the same tracker: the same stream
            FeedClient(url, "1h", "cat:police", 5),
            FeedClient(url, "all", "campaign:spring", 8),
            FeedClient(url, "24h", "all", 20, pause_after=15),  # resumes with its last id
            FeedClient(url, "7d", "all", 12, first_id="123456789-5"),  # an unknown id
        ]
        for client in clients:
            client.start()
            assert client.snapshot_seen.wait(20), "no snapshot"
        messages = traffic(seed=15)
        d.produce(messages, rate=300)
        d.wait_counted(events=EVENTS, dead=0)

        def converged() -> bool:
            return all(c.held() == board_top(url, *c.params.values()) for c in clients)

        try:
            d.wait_for(converged, 60, "every client holding its board's top N")
        finally:
            figures = [{"board": f"{c.params['window']}:{c.params['board']}",
                        "top": c.params["top"], "changes_applied": c.applied,
                        "connections": c.connections,
                        "resets": sum(k == "reset" for k, _, _ in c.events),
                        "mismatches": mismatches(c.held(), board_top(url, *c.params.values()))}
                       for c in clients]
            (ARTIFACTS / "top-feed-live.json").write_text(json.dumps(
                {"clients": len(clients), "events": EVENTS,
                 "changes_applied": sum(f["changes_applied"] for f in figures),
                 "mismatches": sum(f["mismatches"] for f in figures),
                 "per_client": figures}, indent=1))
            for client in clients:
                client.stop()
    for client in clients:
        assert client.failure is None, client.failure
    assert all(f["mismatches"] == 0 for f in figures)
    same, twin, police, campaign, resumed, unknown = clients
    assert all(c.applied > 0 for c in (same, police, campaign, resumed))
    left = {a for kind, _, data in same.events if kind == "change" for a in data["left"]}
    assert "gov.0" in left, "the deleted account left the top"
    # the two clients of one tracker got the same changes under the same ids
    shared = {i for _, i, _ in twin.events if i} & {i for _, i, _ in same.events if i}
    assert len(shared) > 1
    assert [e for e in same.events if e[1] in shared and e[0] == "change"] == [
        e for e in twin.events if e[1] in shared and e[0] == "change"]
    # the client that went away resumed with every missed change: no reset, no snapshot
    assert resumed.connections == 2
    assert [k for k, _, _ in resumed.events].count("snapshot") == 1
    assert not any(k == "reset" for k, _, _ in resumed.events)
    # an id this process never gave: reset, then a snapshot
    assert [k for k, _, _ in unknown.events][:2] == ["reset", "snapshot"]
