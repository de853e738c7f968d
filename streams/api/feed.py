"""The live feed: board-change notices from Redis, fanned out to SSE clients.

Workers XADD a notice to the `rf:changes` stream with every write. One reader task per
API process follows the stream and hands each notice to every connected client's own
bounded queue: a slow client loses its oldest notices (and is told to refetch), never
holds up the others (tests/test_feed.py). Stream ids are the SSE event ids, so a client
reconnecting with `Last-Event-ID` resumes from the stream itself, on any API process.
Listeners (the top-N feeds of streams/api/top_feed.py) are told of every notice too.
The same task follows the milestone alerts stream (`rf:alerts`, streams/api/milestones.py)
and sends each alert to every client as an `alert` event without an id, so alerts never
move a client's `Last-Event-ID` (tests/integration/test_milestones.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

import orjson
import redis.asyncio as aioredis

from streams.api.tasks import BackgroundTask

log = logging.getLogger(__name__)
#: stream entries as a decode_responses client returns them
Entries = list[tuple[str, dict[str, str]]]

#: notices a client may fall behind by before it is told to refetch
CLIENT_QUEUE = 256
HEARTBEAT_S = 15.0


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    clock: int
    boards: tuple[str, ...]  # "window:board"

    def for_filter(self, window: str | None, board: str | None) -> list[str]:
        return [b for b in self.boards
                if (window is None or b.partition(":")[0] == window)
                and (board is None or b.partition(":")[2] == board)]


@dataclass(frozen=True, slots=True)
class Alert:
    """A milestone alert, as the alerts stream holds it (JSON)."""

    id: str
    body: bytes


def parse_notice(entry_id: str, fields: dict[str, str]) -> Notice:
    body = orjson.loads(fields["notice"])
    return Notice(entry_id, int(body["clock"]), tuple(body["boards"]))


@dataclass(eq=False)
class Client:
    window: str | None
    board: str | None
    queue: asyncio.Queue[Notice | Alert | None] = field(
        default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    lagged: bool = False

    def offer(self, notice: Notice | Alert) -> None:
        if self.queue.full():
            self.lagged = True
            self.queue.get_nowait()
        self.queue.put_nowait(notice)


class ChangeFeed(BackgroundTask):
    """Follows the change stream and fans it out to clients."""

    def __init__(self, client: aioredis.Redis, stream: str, alerts: str | None = None) -> None:
        self.client = client
        self.stream = stream
        self.alerts = alerts
        self.clients: set[Client] = set()
        #: told of every notice as it is read (streams/api/top_feed.py)
        self.listeners: list[Callable[[Notice], None]] = []
        self.last_id = "$"
        self.last_alert = "$"

    async def _newest(self, stream: str) -> str:
        newest = cast(Entries, await self.client.xrevrange(stream, count=1))
        return newest[0][0] if newest else "0-0"

    async def run(self) -> None:
        while "$" in (self.last_id, self.last_alert):  # start after the newest entries
            try:
                self.last_id = await self._newest(self.stream)
                self.last_alert = await self._newest(self.alerts) if self.alerts else ""
            except aioredis.RedisError as exc:
                log.warning("change stream unavailable (%s); retrying", exc)
                await asyncio.sleep(1)
        while True:
            streams = {self.stream: self.last_id}
            if self.alerts:
                streams[self.alerts] = self.last_alert
            try:
                found = cast(list[tuple[str, Entries]], await self.client.xread(
                    streams, block=1000, count=500))  # type: ignore[arg-type]
            except aioredis.RedisError as exc:
                log.warning("change stream unavailable (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            for stream, entries in found or ():
                if stream == self.alerts:
                    for entry_id, fields in entries:
                        self.last_alert = entry_id
                        for client in list(self.clients):
                            client.offer(Alert(entry_id, fields["alert"].encode()))
                    continue
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    notice = parse_notice(entry_id, fields)
                    for client in list(self.clients):
                        client.offer(notice)
                    for listener in self.listeners:
                        listener(notice)

    async def missed(self, after: str) -> list[Notice] | None:
        """Notices after `after`, or None when the stream no longer reaches back to it."""
        first = cast(Entries, await self.client.xrange(self.stream, count=1))
        if first and _id_key(first[0][0]) > _id_key(after):
            return None
        entries = cast(Entries, await self.client.xrange(self.stream, min=f"({after}",
                                                          count=CLIENT_QUEUE))
        return [parse_notice(i, f) for i, f in entries]

    async def events(self, window: str | None, board: str | None,
                     last_event_id: str | None) -> AsyncIterator[bytes]:
        """The SSE byte stream of one client."""
        client = Client(window, board)
        self.clients.add(client)
        try:
            yield b"retry: 2000\n\n"
            if last_event_id:
                missed = await self.missed(last_event_id)
                if missed is None:
                    yield sse_event("reset", None, {"reason": "too far behind: refetch"})
                else:
                    for old in missed:
                        chunk = _change(old, window, board)
                        if chunk:
                            yield chunk
            while True:
                try:
                    notice = await asyncio.wait_for(client.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if notice is None:
                    return
                if isinstance(notice, Alert):
                    yield b"event: alert\ndata: " + notice.body + b"\n\n"
                    continue
                if client.lagged:
                    client.lagged = False
                    yield sse_event("reset", notice.id, {"reason": "client fell behind: refetch"})
                    continue
                chunk = _change(notice, window, board)
                if chunk:
                    yield chunk
        finally:
            self.clients.discard(client)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def sse_event(kind: str, event_id: str | None, data: object) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def _change(notice: Notice, window: str | None, board: str | None) -> bytes | None:
    boards = notice.for_filter(window, board)
    if not boards:
        return None
    return sse_event("change", notice.id, {"clock": notice.clock, "boards": boards})
