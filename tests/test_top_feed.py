"""The top-N feed's sequence, ring and resume rules, with a fake board instead of Redis."""

import asyncio

import orjson
import pytest

from streams.api import top_feed
from streams.api.feed import Notice
from streams.api.top_diff import Ranked
from streams.api.top_feed import TooManyBoards, TopFeeds, TopTracker
from streams.sink.keys import RedisKeys


class FakeRedis:
    """The one command the feed reads a board with."""

    def __init__(self):
        self.boards = {}

    async def zrevrange(self, key, start, stop, withscores):
        members = sorted(self.boards.get(key, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        return members[start:stop + 1]


class Board:
    """A board's top as a list the tracker reads."""

    def __init__(self, *members):
        self.set(*members)

    def set(self, *members):
        self.entries = [Ranked(i + 1, a, float(s)) for i, (a, s) in enumerate(members)]

    async def read(self):
        return list(self.entries)


def parse(chunk):
    """(kind, id, data) of one SSE event, or None for a comment or the retry line."""
    fields = dict(line.split(": ", 1) for line in chunk.decode().splitlines()
                  if line and not line.startswith((":", "retry")))
    if not fields:
        return None
    return fields["event"], fields.get("id"), orjson.loads(fields["data"])


async def tracker_of(board, top=3):
    tracker = TopTracker("24h", "all", top, board.read, token=77)
    await tracker.refresh()
    return tracker


async def next_event(events):
    while (event := parse(await events.__anext__())) is None:
        pass
    return event


def test_a_client_gets_a_snapshot_then_the_changes_with_sequence_ids():
    async def run():
        board = Board(("a", 9), ("b", 5))
        tracker = await tracker_of(board)
        events = tracker.events(None)
        assert await next_event(events) == ("snapshot", "77-0", {
            "window": "24h", "board": "all", "top": 3,
            "entries": [{"rank": 1, "account_id": "a", "score": 9.0},
                        {"rank": 2, "account_id": "b", "score": 5.0}]})
        board.set(("c", 10), ("a", 9))
        await tracker.refresh()
        assert await next_event(events) == ("change", "77-1", {
            "entries": [{"rank": 1, "account_id": "c", "score": 10.0},
                        {"rank": 2, "account_id": "a", "score": 9.0}], "left": ["b"]})
        await tracker.refresh()  # nothing changed: no event, no number
        assert tracker.seq == 1
        await events.aclose()
        assert tracker.clients == 0
    asyncio.run(run())


def test_every_client_of_a_process_gets_the_same_bytes():
    async def run():
        board = Board(("a", 9))
        tracker = await tracker_of(board)
        first, second = tracker.events(None), tracker.events(None)
        await next_event(first)
        await next_event(second)
        seen = {id(first): [], id(second): []}
        for score in (10, 11, 12):
            board.set(("a", score), ("b", 1))
            await tracker.refresh()
        for events in (first, second):
            for _ in range(3):
                seen[id(events)].append(await events.__anext__())
        assert seen[id(first)] == seen[id(second)]
        assert [parse(c)[1] for c in seen[id(first)]] == ["77-1", "77-2", "77-3"]
    asyncio.run(run())


def test_a_resuming_client_gets_every_missed_change_and_no_snapshot():
    async def run():
        board = Board(("a", 9))
        tracker = await tracker_of(board)
        for score in (10, 11, 12):
            board.set(("a", score))
            await tracker.refresh()
        events = tracker.events("77-1")
        missed = [await next_event(events) for _ in range(2)]
        assert [(kind, event_id) for kind, event_id, _ in missed] == [
            ("change", "77-2"), ("change", "77-3")]
        assert missed[-1][2]["entries"] == [{"rank": 1, "account_id": "a", "score": 12.0}]
    asyncio.run(run())


@pytest.mark.parametrize("last_event_id", [
    "78-1",            # another tracker's (another API process, or before a restart)
    "77-9",            # ahead of this tracker
    "1700000000000-0",  # a notice-stream id
])
def test_an_unknown_id_gets_a_reset_then_a_snapshot(last_event_id):
    async def run():
        board = Board(("a", 9))
        tracker = await tracker_of(board)
        board.set(("a", 10))
        await tracker.refresh()
        events = tracker.events(last_event_id)
        assert (await next_event(events))[0] == "reset"
        kind, event_id, data = await next_event(events)
        assert (kind, event_id) == ("snapshot", "77-1")
        assert data["entries"] == [{"rank": 1, "account_id": "a", "score": 10.0}]
    asyncio.run(run())


def test_an_id_older_than_the_ring_gets_a_reset_then_a_snapshot():
    async def run():
        board = Board(("a", 0))
        tracker = await tracker_of(board)
        for score in range(1, top_feed.RING_CHANGES + 3):
            board.set(("a", score))
            await tracker.refresh()
        assert len(tracker.ring) == top_feed.RING_CHANGES
        assert tracker.after(2) is not None and tracker.after(1) is None
        events = tracker.events("77-1")
        assert (await next_event(events))[0] == "reset"
        assert (await next_event(events))[:2] == ("snapshot", f"77-{tracker.seq}")
    asyncio.run(run())


def test_a_client_that_falls_behind_the_ring_is_reset_not_left_with_a_gap():
    async def run():
        board = Board(("a", 0))
        tracker = await tracker_of(board)
        events = tracker.events(None)
        await next_event(events)
        board.set(("a", 1))
        await tracker.refresh()
        assert (await next_event(events))[1] == "77-1"
        for score in range(2, top_feed.RING_CHANGES + 4):  # while the client is not read
            board.set(("a", score))
            await tracker.refresh()
        assert (await next_event(events))[0] == "reset"
        kind, event_id, data = await next_event(events)
        assert (kind, event_id) == ("snapshot", f"77-{tracker.seq}")
        assert data["entries"][0]["score"] == float(top_feed.RING_CHANGES + 3)
    asyncio.run(run())


def test_notices_wake_only_the_trackers_of_the_boards_they_name():
    async def run():
        redis = FakeRedis()
        keys = RedisKeys("t:")
        redis.boards[keys.board("24h", "all")] = {"a": 3.0, "b": 2.0, "c": 1.0}
        feeds = TopFeeds(redis, keys)
        try:
            day = await feeds.open("24h", "all", 2)
            assert [(e.rank, e.account_id) for e in day.entries] == [(1, "a"), (2, "b")]
            hour = await feeds.open("1h", "all", 2)
            assert await feeds.open("24h", "all", 2) is day
            feeds.notice(Notice("1-0", 1, ("24h:all", "24h:cat:x")))
            assert day._dirty.is_set() and not hour._dirty.is_set()
        finally:
            await feeds.close()
    asyncio.run(run())


def test_the_trackers_of_a_process_are_bounded(monkeypatch):
    async def run():
        monkeypatch.setattr(top_feed, "MAX_TRACKERS", 2)
        feeds = TopFeeds(FakeRedis(), RedisKeys("t:"))
        try:
            first = await feeds.open("24h", "all", 1)
            await feeds.open("24h", "all", 2)
            await feeds.open("24h", "all", 3)  # the longest idle one goes
            assert len(feeds.trackers) == 2 and first not in feeds.trackers.values()
            busy = [feeds.trackers[k].events(None) for k in list(feeds.trackers)]
            for events in busy:
                await events.__anext__()
            with pytest.raises(TooManyBoards):
                await feeds.open("24h", "all", 4)
        finally:
            await feeds.close()
    asyncio.run(run())
