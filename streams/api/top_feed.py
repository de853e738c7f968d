"""The live feed of a board's top N: a snapshot, then every change, resumable.

One `TopTracker` per (window, board, top) in an API process holds the board's top N. It
is re-read when a change notice names its board (streams/api/feed.py), and every
RESYNC_S in case a write sent none; each difference (streams/api/top_diff.py) takes the
next number of the tracker's sequence and is encoded once, so every client of the
process gets the same bytes under the same ids (tests/test_top_feed.py).

Event ids are `{token}-{seq}`, the token random per tracker: an id from another API
process, or from before a restart, is unknown here. A bounded ring keeps the recent
changes: a client resuming with an id still in it gets every change after it; any other
id gets `reset`, then a new snapshot: never a silent gap. A tracker with no client
lingers LINGER_S (so a reconnect finds its ring), then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis

from streams.api.feed import HEARTBEAT_S, Notice, sse_event
from streams.api.reader import competition_ranks
from streams.api.top_diff import Ranked, TopChange, diff
from streams.sink.keys import RedisKeys

log = logging.getLogger(__name__)

#: reads a board's top N, ranked
Read = Callable[[], Awaitable[list[Ranked]]]

#: the largest N a client may follow (each change lists at most 2 N accounts)
TOP_MAX = 100
#: changes a tracker keeps for resuming clients, and the bytes they may take
RING_CHANGES = 256
RING_BYTES = 1 << 20
#: boards followed at once by one API process (memory: at most this many rings)
MAX_TRACKERS = 64
RESYNC_S = 10.0
LINGER_S = 60.0
#: a busy board is re-read at most this often (notices of one read coalesce)
MIN_READ_GAP_S = 0.1


class TooManyBoards(Exception):
    """Every tracker slot of this process is held by a board with clients."""


class TopTracker:
    """One board's top N in this process, its change sequence and the recent changes."""

    def __init__(self, window: str, board: str, top: int, read: Read,
                 token: int | None = None) -> None:
        self.window, self.board, self.top = window, board, top
        self.read = read
        self.token = secrets.randbelow(10**18) if token is None else token
        self.seq = 0
        self.entries: list[Ranked] = []
        self.ready = False
        self.clients = 0
        self.idle_since = time.monotonic()
        self.ring: deque[tuple[int, bytes]] = deque()
        self._ring_bytes = 0
        self._dirty = asyncio.Event()
        self._published = asyncio.Event()
        self._lock = asyncio.Lock()

    def event_id(self, seq: int) -> str:
        return f"{self.token}-{seq}"

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def wait_dirty(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._dirty.wait(), timeout)
        self._dirty.clear()  # before the read, so a notice during it asks for another

    async def refresh(self) -> None:
        """Read the top N; publish the change, if any (the first read only sets it)."""
        async with self._lock:
            new = await self.read()
            change = diff(self.entries, new)
            self.entries = new
            if self.ready and change:
                self._publish(change)
            self.ready = True

    def _publish(self, change: TopChange) -> None:
        self.seq += 1
        chunk = sse_event("change", self.event_id(self.seq), change.as_json())
        self.ring.append((self.seq, chunk))
        self._ring_bytes += len(chunk)
        while len(self.ring) > RING_CHANGES or (self._ring_bytes > RING_BYTES
                                                 and len(self.ring) > 1):
            self._ring_bytes -= len(self.ring.popleft()[1])
        published, self._published = self._published, asyncio.Event()
        published.set()

    def snapshot(self) -> tuple[int, bytes]:
        """The top N now, as a `snapshot` event, and the sequence number it stands at."""
        return self.seq, sse_event("snapshot", self.event_id(self.seq), {
            "window": self.window, "board": self.board, "top": self.top,
            "entries": [e.as_json() for e in self.entries]})

    def after(self, seq: int) -> list[tuple[int, bytes]] | None:
        """The changes after `seq`, or None when the ring no longer reaches back to it."""
        if seq == self.seq:
            return []
        oldest = self.ring[0][0] if self.ring else self.seq + 1
        if seq > self.seq or seq < oldest - 1:
            return None
        return [(s, chunk) for s, chunk in self.ring if s > seq]

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The sequence number of one of this tracker's ids, or None for any other."""
        token, _, seq = (last_event_id or "").partition("-")
        if token != str(self.token) or not seq.isdigit():
            return None
        return int(seq)

    async def wait_published(self, timeout: float) -> bool:
        """Wait for the next change; False when `timeout` passed without one."""
        try:
            await asyncio.wait_for(self._published.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def events(self, last_event_id: str | None) -> AsyncIterator[bytes]:
        """One client's SSE bytes: the missed changes or a (reset and) snapshot, then
        every change as it is published."""
        self.clients += 1
        try:
            yield b"retry: 2000\n\n"
            resumed = self.resume_point(last_event_id)
            missed = None if resumed is None else self.after(resumed)
            if resumed is None or missed is None:
                if last_event_id:
                    yield sse_event("reset", None, {"reason": "unknown or too old "
                                                    "Last-Event-ID: a new snapshot follows"})
                seq, chunk = self.snapshot()
                yield chunk
            else:
                seq = resumed
                for seq, chunk in missed:  # noqa: B007 (seq: the last one sent)
                    yield chunk
            while True:
                found = self.after(seq)
                if found is None:  # the ring moved past this client while it was sent to
                    yield sse_event("reset", None, {"reason": "client fell behind: a new "
                                                    "snapshot follows"})
                    seq, chunk = self.snapshot()
                    yield chunk
                elif found:
                    for seq, chunk in found:  # noqa: B007 (seq: the last one sent)
                        yield chunk
                elif not await self.wait_published(HEARTBEAT_S):
                    yield b": keep-alive\n\n"
        finally:
            self.clients -= 1
            if self.clients == 0:
                self.idle_since = time.monotonic()


class TopFeeds:
    """The trackers of one API process: opened on demand, told of notices, stopped
    when idle."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self.trackers: dict[tuple[str, str, int], TopTracker] = {}
        self._tasks: dict[TopTracker, asyncio.Task[None]] = {}

    def notice(self, notice: Notice) -> None:
        """A change notice: mark the trackers of the boards it names."""
        named = set(notice.boards)
        for tracker in self.trackers.values():
            if f"{tracker.window}:{tracker.board}" in named:
                tracker.mark_dirty()

    async def open(self, window: str, board: str, top: int) -> TopTracker:
        """The tracker of (window, board, top), read at least once (a Redis error
        raises here, before any event is sent)."""
        key = (window, board, top)
        tracker = self.trackers.get(key)
        if tracker is None:
            self._make_room()
            tracker = self.trackers[key] = TopTracker(window, board, top,
                                                      self._reader(window, board, top))
            self._tasks[tracker] = asyncio.ensure_future(self._follow(key, tracker))
        tracker.idle_since = time.monotonic()  # not stopped before its client starts
        if not tracker.ready:
            await tracker.refresh()
        return tracker

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.trackers.clear()

    def _make_room(self) -> None:
        if len(self.trackers) < MAX_TRACKERS:
            return
        idle = [t for t in self.trackers.values() if t.clients == 0]
        if not idle:
            raise TooManyBoards(f"{MAX_TRACKERS} boards are followed on this API process")
        self._drop(min(idle, key=lambda t: t.idle_since))

    def _drop(self, tracker: TopTracker) -> None:
        self.trackers.pop((tracker.window, tracker.board, tracker.top), None)
        task = self._tasks.pop(tracker, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _follow(self, key: tuple[str, str, int], tracker: TopTracker) -> None:
        while True:
            await tracker.wait_dirty(RESYNC_S)
            if tracker.clients == 0 and time.monotonic() - tracker.idle_since > LINGER_S:
                self._drop(tracker)  # in the same step as the check: no client finds it
                return
            try:
                await tracker.refresh()
            except aioredis.RedisError as exc:
                log.warning("top feed %s: board unreadable (%s); retrying", key, exc)
                tracker.mark_dirty()
                await asyncio.sleep(1)
            await asyncio.sleep(MIN_READ_GAP_S)

    def _reader(self, window: str, board: str, top: int) -> Read:
        board_key = self.keys.board(window, board)

        async def read() -> list[Ranked]:
            members: list[tuple[str, float]] = await self.client.zrevrange(  # type: ignore[assignment]
                board_key, 0, top - 1, withscores=True)
            ranks = competition_ranks([score for _, score in members], 1, 0)
            return [Ranked(rank, account_id, score)
                    for (account_id, score), rank in zip(members, ranks, strict=True)]
        return read
