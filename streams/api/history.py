"""A compact in-memory history of campaign totals for the page's charts, kept by each
API process (an account's rank history is in Redis: streams/api/recorder.py).

Every `interval` seconds the API snapshots every campaign's totals. Each series is a
bounded deque (`points` long: an hour at the default 10 s), and a series whose points are
all older than that span is dropped: campaigns come and go, but memory holds only the
last span's snapshots (tests/test_history.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis

from streams.api.tasks import BackgroundTask
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys

log = logging.getLogger(__name__)
#: a point of a series: its time in ms first
Point = TypeVar("Point", bound=tuple[Any, ...])


@dataclass
class History:
    points: int = 360
    #: (window, campaign) -> [(ms, views, likes, uploads, accounts)]
    campaigns: dict[tuple[str, str], deque[tuple[int, int, int, int, int]]] = field(
        default_factory=dict)

    def add_campaign(self, window: str, campaign: str, at_ms: int,
                     totals: tuple[int, int, int, int]) -> None:
        series = self.campaigns.get((window, campaign))
        if series is None:
            series = self.campaigns[window, campaign] = deque(maxlen=self.points)
        series.append((at_ms, *totals))

    def forget_before(self, at_ms: int) -> None:
        """Drop the points taken before `at_ms`, and the series left empty."""
        _forget_before(self.campaigns, at_ms)


def _forget_before(table: dict[tuple[str, str], deque[Point]], at_ms: int) -> None:
    for key, series in list(table.items()):
        while series and series[0][0] < at_ms:
            series.popleft()
        if not series:
            del table[key]


class HistoryRecorder(BackgroundTask):
    """Takes the snapshots on a timer."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, windows: Windows,
                 history: History, interval: float = 10.0) -> None:
        self.client, self.keys, self.windows = client, keys, windows
        self.history, self.interval = history, interval

    async def run(self) -> None:
        while True:
            try:
                await self.snapshot()
            except aioredis.RedisError as exc:
                log.warning("history snapshot skipped: %s", exc)
            await asyncio.sleep(self.interval)

    async def snapshot(self) -> None:
        now = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        found_campaigns: set[str] = await self.client.smembers(  # type: ignore[assignment]
            self.keys.campaigns)
        campaigns = sorted(found_campaigns)
        for campaign in campaigns:
            pipe.hgetall(self.keys.campaign(campaign))
        found = await pipe.execute() if campaigns else []
        for campaign, totals in zip(campaigns, found, strict=True):
            for window in self.windows.ids:
                self.history.add_campaign(window, campaign, now, tuple(  # type: ignore[arg-type]
                    int(totals.get(f"{window}.{name}", 0))
                    for name in ("views", "likes", "uploads", "accounts")))
        self.history.forget_before(now - int(self.history.points * self.interval * 1000))
