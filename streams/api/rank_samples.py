"""Rank history samples: their ticks, their ring slots and their binary records.

Pure (no Redis, no I/O). Every sample is taken at a tick boundary (the time floored to
its step: 10 s or 10 minutes), so two recorders overlapping during a takeover name the
same tick and write the same slot. One account's history on one board at one step is a
ring of fixed-width records, as long as the step keeps (8,640 slots of 10 s: a day;
4,320 of 10 minutes: 30 days): a tick's record goes to slot `tick / step mod slots`, so
a write is an absolute overwrite (idempotent), the ring never grows past its length, and
a record is read back only when the tick it carries is inside the kept span
(tests/test_rank_samples.py).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DAY_MS = 86_400_000
#: a record: the tick in steps since the epoch (uint32), the rank (uint16), the score
RECORD = struct.Struct("<IHd")


@dataclass(frozen=True, slots=True)
class Step:
    """A sampling resolution: its name, its tick in ms and how long its samples stay."""

    name: str
    ms: int
    keep_ms: int

    @property
    def slots(self) -> int:
        return self.keep_ms // self.ms

    @property
    def ring_bytes(self) -> int:
        return self.slots * RECORD.size

    def tick(self, now_ms: int) -> int:
        """The tick boundary at or before `now_ms`."""
        return now_ms - now_ms % self.ms

    def cutoff(self, tick_ms: int) -> int:
        """Ticks at or before this are out of the span kept at `tick_ms` (a day of 10 s
        samples is 8,640 of them, the newest at `tick_ms`)."""
        return tick_ms - self.keep_ms

    def offset(self, tick_ms: int) -> int:
        """The byte offset of a tick's record in its ring."""
        return (tick_ms // self.ms) % self.slots * RECORD.size

    def record(self, tick_ms: int, rank: int, score: float) -> bytes:
        return RECORD.pack(tick_ms // self.ms, min(rank, 0xFFFF), score)

    def points(self, ring: bytes, now_ms: int) -> list[tuple[int, float, int]]:
        """The (ms, score, rank) records of a ring inside the span kept at `now_ms`,
        oldest first (empty and stale slots are skipped)."""
        newest = self.tick(now_ms)
        cutoff = self.cutoff(newest)
        out = []
        for steps, rank, score in RECORD.iter_unpack(ring[:len(ring) - len(ring) % RECORD.size]):
            tick = steps * self.ms
            if rank and cutoff < tick <= newest:
                out.append((tick, score, rank))
        out.sort()
        return out


STEPS: dict[str, Step] = {
    "10s": Step("10s", 10_000, DAY_MS),
    "10m": Step("10m", 600_000, 30 * DAY_MS),
}


def ranked(tops: Mapping[tuple[str, str], Sequence[tuple[str, float]]]
           ) -> list[tuple[str, str, str, int, float]]:
    """(window, board, account_id, rank, score) of every account read: (window, board) ->
    the board's top as (account_id, score) in descending score. Ties share a competition
    rank (1, 1, 3)."""
    out = []
    for (window, board), members in tops.items():
        rank, previous = 0, None
        for place, (account_id, score) in enumerate(members, 1):
            if score != previous:
                rank, previous = place, score
            out.append((window, board, account_id, rank, score))
    return out
