"""The rank recorder: one API process at a time samples every board's top into Redis.

Every API process runs a `RankRecorder`; the one holding the lease (streams/api/lease.py)
records. At each 10-second tick it reads the top TOP accounts of every board (`all`,
every category of rf:categories and campaign of rf:campaigns, in every window) and writes
each account's rank and score into its ring for that board at 10 s, and, at its first
tick in each 10-minute slot, at 10 min (streams/api/rank_samples.py). A write is an
absolute overwrite of the tick's slot, so two recorders overlapping during a takeover
leave one record per tick; it also sets the ring to expire when its newest record leaves
the kept span, so an account that left every top leaves no key behind
(tests/integration/test_recorder.py). Listeners are handed each tick's reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis

from streams.api.lease import Lease
from streams.api.rank_samples import STEPS, Step, ranked
from streams.api.tasks import BackgroundTask
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys

log = logging.getLogger(__name__)

#: accounts sampled per board
TOP = 100
#: records written per script call: each call well under 100 ms. A ring's first write
#: makes its whole string (121 KB at 10 s), about 1 ms: 500 per call took 0.26-0.6 s,
#: and over 1 s on a loaded machine; 100 still 0.1-0.13 s
#: (tests/integration/test_bounded_writes.py)
WRITE_CHUNK = 25
#: (window, board) -> its top as (account_id, score), descending
Tops = Mapping[tuple[str, str], Sequence[tuple[str, float]]]
Listener = Callable[[int, Tops], Awaitable[object]]


# KEYS: rings. ARGV[1] the ring's length, ARGV[2] expiry ms, ARGV[3] the tick's offset,
# ARGV[3+i] the record for KEYS[i]. A new ring is made whole at once: grown by each
# write, Redis's string growth would reserve twice its length (bench/history_memory.py).
WRITE = """
local size, expire, offset = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if redis.call('STRLEN', key) ~= size then
    redis.call('SET', key, string.rep('\\0', size))
  end
  redis.call('SETRANGE', key, offset, ARGV[3 + i])
  redis.call('PEXPIRE', key, expire)
end
return #KEYS
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class RankRecorder(BackgroundTask):
    """Holds (or waits for) the lease, and samples the boards at every tick it holds it.

    `client` must not decode responses (the rings are binary)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, windows: Windows,
                 lease: Lease, clock: Callable[[], int] = now_ms, top: int = TOP) -> None:
        self.client, self.keys, self.windows = client, keys, windows
        self.lease, self.clock, self.top = lease, clock, top
        self.step, self.slow = STEPS["10s"], STEPS["10m"]
        self.listeners: list[Listener] = []
        self._write = client.register_script(WRITE)
        self._last_tick = -1
        self._last_slot = -1

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.beat()
                except aioredis.RedisError as exc:
                    log.warning("rank recorder: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(self._pause())
        finally:
            with contextlib.suppress(aioredis.RedisError):  # else it lapses on its own
                await self.lease.release()

    def _pause(self) -> float:
        """Until the next tick, or a third of the lease (renewal), whichever comes first."""
        to_tick = (self.step.ms - self.clock() % self.step.ms) / 1000 + 0.01
        return min(to_tick, self.lease.ttl_ms / 3000)

    async def beat(self) -> None:
        """Take or renew the lease; holding it, sample the tick if not done yet."""
        if not await self.lease.hold():
            self._last_tick = self._last_slot = -1  # on taking over, sample at once
            return
        tick = self.step.tick(self.clock())
        if tick == self._last_tick:
            return
        tops = await self.read_tops()
        await self.write(tick, tops, self.step)
        slot = self.slow.tick(tick)
        if slot != self._last_slot:
            await self.write(slot, tops, self.slow)
            self._last_slot = slot
        self._last_tick = tick
        for listener in self.listeners:
            await listener(tick, tops)

    async def boards(self) -> list[str]:
        categories = cast(set[bytes], await self.client.smembers(self.keys.categories))
        campaigns = cast(set[bytes], await self.client.smembers(self.keys.campaigns))
        return ["all", *(f"cat:{c.decode()}" for c in sorted(categories)),
                *(f"campaign:{c.decode()}" for c in sorted(campaigns))]

    async def read_tops(self) -> dict[tuple[str, str], list[tuple[str, float]]]:
        boards = await self.boards()
        pairs = [(w, b) for w in self.windows.ids for b in boards]
        pipe = self.client.pipeline(transaction=False)
        for window, board in pairs:
            pipe.zrevrange(self.keys.board(window, board), 0, self.top - 1, withscores=True)
        found = await pipe.execute()
        return {pair: [(member.decode(), score) for member, score in members]
                for pair, members in zip(pairs, found, strict=True) if members}

    async def write(self, tick: int, tops: Tops, step: Step) -> None:
        """Overwrite the tick's slot in each account's ring of each board read."""
        # a ring expires when its newest record leaves the span (test_recorder.py)
        expire = step.keep_ms + step.ms
        records = ranked(tops)
        for start in range(0, len(records), WRITE_CHUNK):
            chunk = records[start:start + WRITE_CHUNK]
            await self._write(
                keys=[self.keys.rank_history(step.name, w, b, a) for w, b, a, _, _ in chunk],
                args=[step.ring_bytes, expire, step.offset(tick),
                      *(step.record(tick, rank, score) for _, _, _, rank, score in chunk)])
