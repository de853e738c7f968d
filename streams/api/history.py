"""A compact in-memory history for the page's charts, kept by each API process.

Every `interval` seconds the API snapshots the index of the top accounts of every
window's overall board, and every campaign's totals. Each series is a bounded deque
(`points` long: an hour at the default 10 s), and a series whose points are all older
than that span is dropped: accounts keep entering and leaving the top, and campaigns
come and go, but memory holds only the last span's snapshots (tests/test_history.py).
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
    #: (window, account_id) -> [(ms, index)]
    accounts: dict[tuple[str, str], deque[tuple[int, float]]] = field(default_factory=dict)
    #: (window, campaign) -> [(ms, views, likes, uploads, accounts)]
    campaigns: dict[tuple[str, str], deque[tuple[int, int, int, int, int]]] = field(
        default_factory=dict)

    def add_account(self, window: str, account_id: str, at_ms: int, index: float) -> None:
        series = self.accounts.get((window, account_id))
        if series is None:
            series = self.accounts[window, account_id] = deque(maxlen=self.points)
        series.append((at_ms, index))

    def add_campaign(self, window: str, campaign: str, at_ms: int,
                     totals: tuple[int, int, int, int]) -> None:
        series = self.campaigns.get((window, campaign))
        if series is None:
            series = self.campaigns[window, campaign] = deque(maxlen=self.points)
        series.append((at_ms, *totals))

    def forget_before(self, at_ms: int) -> None:
        """Drop the points taken before `at_ms`, and the series left empty."""
        _forget_before(self.accounts, at_ms)
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
                 history: History, top: int = 20, interval: float = 10.0) -> None:
        self.client, self.keys, self.windows = client, keys, windows
        self.history, self.top, self.interval = history, top, interval

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
        for window in self.windows.ids:
            pipe.zrevrange(self.keys.board(window, "all"), 0, self.top - 1, withscores=True)
        found_campaigns: set[str] = await self.client.smembers(  # type: ignore[assignment]
            self.keys.campaigns)
        campaigns = sorted(found_campaigns)
        for campaign in campaigns:
            pipe.hgetall(self.keys.campaign(campaign))
        found = await pipe.execute()
        for window, members in zip(self.windows.ids, found, strict=False):
            for account_id, score in members:
                self.history.add_account(window, account_id, now, score)
        for campaign, totals in zip(campaigns, found[len(self.windows.ids):], strict=True):
            for window in self.windows.ids:
                self.history.add_campaign(window, campaign, now, tuple(  # type: ignore[arg-type]
                    int(totals.get(f"{window}.{name}", 0))
                    for name in ("views", "likes", "uploads", "accounts")))
        self.history.forget_before(now - int(self.history.points * self.interval * 1000))
