"""Recently seen event ids of one partition, kept in sealed segments that survive restarts.

Each id remembers where it was first seen (`source_ref`: topic slot and offset), so a
replay of that very message after a crash is told apart from a producer's duplicate.
Re-keyed messages also remember their origin (topic:partition:offset before re-keying)
and the re-keyed record that first carried it, counted or dead-lettered: another copy
of the same origin, left by a crash between re-keying and saving state, is a replay,
not a producer's duplicate.
An id is kept until it is both at least `min_events` ids old and `min_age_ms` old; a
hard cap of `max_ids` bounds memory at very high rates (oldest segments go first).
Held by tests/test_dedup.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

SOURCE_SLOTS = 8


def source_ref(slot: int, offset: int) -> int:
    """Pack a source topic slot and an offset into one int."""
    return offset * SOURCE_SLOTS + slot


def unpack_ref(ref: int) -> tuple[int, int]:
    return ref % SOURCE_SLOTS, ref // SOURCE_SLOTS


@dataclass(slots=True)
class Segment:
    """Ids added between two seals; the unit written to and expired from the changelog."""

    seq: int
    wall_ms: int
    #: (event_id, source ref), or (event_id, source ref, origin) for a re-keyed message
    #: (event_id "" when it was dead-lettered: only its origin is remembered)
    ids: list[tuple[str, int] | tuple[str, int, str]]
    end_total: int


@dataclass(slots=True)
class RecentEventIds:
    min_events: int = 100_000
    min_age_ms: int = 600_000
    max_ids: int = 1_000_000
    _refs: dict[str, int] = field(default_factory=dict)
    _origins: dict[str, int] = field(default_factory=dict)
    _pending: list[tuple[str, int] | tuple[str, int, str]] = field(default_factory=list)
    _segments: deque[Segment] = field(default_factory=deque)
    _total: int = 0

    def __len__(self) -> int:
        return len(self._refs)

    def first_seen(self, event_id: str) -> int | None:
        """The source ref where this id was first seen, or None."""
        return self._refs.get(event_id)

    def first_ref(self, event_id: str, ref: int) -> int:
        """Where this id was first seen; a new id is remembered as seen at `ref`."""
        seen = self._refs.get(event_id)
        if seen is None:
            self.add(event_id, ref)
            return ref
        return seen

    def origin_ref(self, origin: str) -> int | None:
        """The re-keyed record that first carried this origin, or None."""
        return self._origins.get(origin)

    def add(self, event_id: str, ref: int, origin: str | None = None) -> None:
        """Remember a counted event (and, when re-keyed, its origin)."""
        self._refs[event_id] = ref
        if origin is None:
            self._pending.append((event_id, ref))
        else:
            self._origins[origin] = ref
            self._pending.append((event_id, ref, origin))
        self._total += 1

    def add_origin(self, origin: str, ref: int) -> None:
        """Remember the origin of a re-keyed message that was dead-lettered."""
        self._origins[origin] = ref
        self._pending.append(("", ref, origin))

    def seal(self, seq: int, wall_ms: int, max_ids: int) -> list[Segment]:
        """Close the pending ids into segments of at most `max_ids` ids each."""
        sealed: list[Segment] = []
        pending, self._pending = self._pending, []
        start = 0
        while True:
            chunk = pending[start : start + max_ids]
            start += max_ids
            segment = Segment(seq + len(sealed), wall_ms, chunk,
                              self._total - max(0, len(pending) - start))
            sealed.append(segment)
            self._segments.append(segment)
            if start >= len(pending):
                return sealed

    def expire(self, now_ms: int) -> list[int]:
        """Drop segments old enough by both measures (or over the cap); their seqs."""
        dropped = []
        while self._segments:
            oldest = self._segments[0]
            newer = self._total - oldest.end_total
            old_enough = newer >= self.min_events and now_ms - oldest.wall_ms >= self.min_age_ms
            if not (old_enough or len(self._refs) > self.max_ids) or len(self._segments) == 1:
                break
            self._segments.popleft()
            for event_id, ref, *origin in oldest.ids:
                if event_id and self._refs.get(event_id) == ref:
                    del self._refs[event_id]
                if origin and self._origins.get(origin[0]) == ref:
                    del self._origins[origin[0]]
            dropped.append(oldest.seq)
        return dropped

    def restore(self, segments: Iterable[Segment]) -> None:
        """Rebuild from the segments kept in the changelog (any order)."""
        for segment in sorted(segments, key=lambda s: s.seq):
            self._segments.append(segment)
            for event_id, ref, *origin in segment.ids:
                if event_id:
                    self._refs.setdefault(event_id, ref)
                if origin:
                    self._origins.setdefault(origin[0], ref)
            self._total = max(self._total, segment.end_total)
