"""Recently seen event ids of one partition, kept in sealed segments that survive restarts.

Each id remembers where it was first seen (`source_ref`: topic slot and offset), so a
replay of that very message after a crash is told apart from a producer's duplicate.
Re-keyed messages also remember their origin (topic:partition:offset before re-keying)
and the re-keyed record that first carried it, counted or dead-lettered: another copy
of the same origin, left by a crash between re-keying and saving state, is a replay,
not a producer's duplicate.
An id is kept until it is both at least `min_events` ids old and `min_age_ms` old; a
hard cap of `max_ids` bounds memory at very high rates (oldest segments go first, and
`take_cut` reports the cut). Held by tests/test_dedup.py.

Memory (bench/dedup_size.py): the changelog records keep the ids as strings, but in
memory an id is its 64-bit `hash()` and its source ref, 8 bytes each in the arrays of
its segment, plus one 8-byte slot of an open-addressing table (linear probing) that
points at it: 30.5 bytes per id measured once the table is sized for the cap (load 0.6),
up to ~43 while a growing table is 0.3 full, instead of ~195 for a dict of strings. The
price is CPU: the table is probed in Python bytecode, not in C (docs/performance.md).
`hash(str)` is SipHash-1-3 with a per-process random key (the table is rebuilt from the
strings at every restore, so the key never needs to be stable): a new id is
taken for one of `n` remembered ids with probability about n / 2**64, 4e-13 for a full
default window of 8,000,000; at 100,000 events/s that is about one event a year (it is
dead-lettered as a duplicate, not lost silently).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

SOURCE_SLOTS = 8
#: ids per partition remembered at most (RANKFLOW_DEDUP_MAX_IDS): 10 minutes at
#: 100,000 events/s over 8 partitions is 7,500,000
DEFAULT_MAX_IDS = 8_000_000

#: a table slot holds (tag | distance from its home slot | segment number | position) + 1,
#: 0 is empty: the tag (top bits of the id's hash) spares most probes a look into a
#: segment, the distance lets a deletion shift entries back without one
POS_BITS = 13
POS_MASK = (1 << POS_BITS) - 1
NUMBER_BITS = 26
NUMBER_MASK = (1 << NUMBER_BITS) - 1
DIST_SHIFT = POS_BITS + NUMBER_BITS
DIST_BITS = 12
DIST_MASK = (1 << DIST_BITS) - 1
TAG_SHIFT = DIST_SHIFT + DIST_BITS
TAG_BITS = 11
TAG_MASK = (1 << TAG_BITS) - 1
HASH_TO_TAG = 64 - TAG_BITS
#: entries per segment, so per changelog record: the longest entries (64 escaped
#: characters of id, a re-keyed origin) keep it under state.RECORD_LIMIT
#: (tests/test_state_records.py)
SEGMENT_IDS = 1_000
#: at most this many ids per partition: segments holding ids are numbered modulo
#: 2**NUMBER_BITS, so fewer than that may be live at once
MAX_IDS_LIMIT = 50_000_000
MIN_SLOTS = 1024
#: the table grows by half when it would be fuller than this (a miss probes ~3.6 slots)
MAX_LOAD = 0.6
#: sized for the cap, it takes the batch sealed before `expire` up to this load
FULL_LOAD = 0.75

#: one remembered entry as the changelog record has it: (event_id, ref) or
#: (event_id, ref, origin); event_id "" when only the origin is remembered
Entry = tuple[str, int] | tuple[str, int, str]


def source_ref(slot: int, offset: int) -> int:
    """Pack a source topic slot and an offset into one int."""
    return offset * SOURCE_SLOTS + slot


def unpack_ref(ref: int) -> tuple[int, int]:
    return ref % SOURCE_SLOTS, ref // SOURCE_SLOTS


@dataclass(slots=True)
class Segment:
    """Ids added between two seals; the unit written to and expired from the changelog.

    In memory an id is its hash and its source ref (the strings stay in the record).
    """

    seq: int
    wall_ms: int
    end_total: int
    hashes: array[int] = field(default_factory=lambda: array("q"))
    refs: array[int] = field(default_factory=lambda: array("q"))
    #: (origin, ref) of re-keyed messages (rare: only misplaced or unkeyed ones)
    origins: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, seq: int, wall_ms: int, ids: Iterable[Sequence[object]],
           end_total: int) -> Segment:
        """A segment of record entries, `(event_id, ref[, origin])`."""
        hashes: list[int] = []
        refs: list[int] = []
        origins: list[tuple[str, int]] = []
        for entry in ids:
            event_id, ref = entry[0], entry[1]
            if event_id:
                hashes.append(hash(event_id))
                refs.append(ref)  # type: ignore[arg-type]
            if len(entry) > 2:
                origins.append((str(entry[2]), ref))  # type: ignore[arg-type]
        if len(hashes) > POS_MASK + 1:
            raise ValueError(f"a dedup segment of {len(hashes)} ids, at most {POS_MASK + 1}")
        return cls(seq, wall_ms, end_total, array("q", hashes), array("q", refs), origins)

    def __len__(self) -> int:
        return len(self.hashes)


class Sealed(NamedTuple):
    """A newly sealed segment and its entries as the changelog record carries them."""

    segment: Segment
    ids: list[Entry]


class DedupCut(NamedTuple):
    """Ids the cap forgot before they were old enough, since the last `take_cut`."""

    ids: int
    #: True for the first cut since ids last expired by age (a new cut episode)
    new_episode: bool
    #: how far back the ids still remembered reach
    window_ms: int


@dataclass(slots=True)
class RecentEventIds:
    min_events: int = 100_000
    min_age_ms: int = 600_000
    max_ids: int = DEFAULT_MAX_IDS
    #: entries (ids and origins) per segment, so per changelog record
    segment_ids: int = SEGMENT_IDS
    _slots: array[int] = field(default_factory=lambda: array("q", bytes(8 * MIN_SLOTS)))
    _used: int = 0
    _grow_at: int = int(MAX_LOAD * MIN_SLOTS)
    #: segments by number (modulo 2**NUMBER_BITS), which the table slots name
    _numbered: dict[int, Segment] = field(default_factory=dict)
    _next_number: int = 0
    #: segments being filled by this batch, with their entries for the changelog record
    _open: list[tuple[Segment, list[Entry]]] = field(default_factory=list)
    _origins: dict[str, int] = field(default_factory=dict)
    _segments: deque[Segment] = field(default_factory=deque)
    #: the numbers of `_segments`, -1 for a segment without ids (not numbered)
    _numbers: deque[int] = field(default_factory=deque)
    _total: int = 0
    _cutting: bool = False
    _cut: DedupCut | None = None

    def __post_init__(self) -> None:
        if not 0 < self.segment_ids <= POS_MASK + 1:
            raise ValueError(f"segment_ids {self.segment_ids}: 1 to {POS_MASK + 1}")

    def __len__(self) -> int:
        return self._used

    def first_seen(self, event_id: str) -> int | None:
        """The source ref where this id was first seen, or None."""
        return self._find(hash(event_id))

    def first_ref(self, event_id: str, ref: int) -> int:
        """Where this id was first seen; a new id is remembered as seen at `ref`.

        One probe finds it or the empty slot that will hold it: it runs once per event
        (bench/dedup_size.py)."""
        if self._used >= self._grow_at:
            self._grow(self._used + 1)
        slots = self._slots
        n_slots = len(slots)
        h = hash(event_id)
        tag = (h >> HASH_TO_TAG) & TAG_MASK
        i = h % n_slots
        v = slots[i]
        dist = 0
        while v:
            v -= 1
            if v >> TAG_SHIFT == tag:
                segment = self._numbered[(v >> POS_BITS) & NUMBER_MASK]
                if segment.hashes[v & POS_MASK] == h:
                    return segment.refs[v & POS_MASK]
            i += 1
            dist += 1
            if i == n_slots:
                i = 0
            v = slots[i]
        if dist > DIST_MASK:  # a probe too long for its slot: not in practice
            self._grow(self._used + 1)
            return self.first_ref(event_id, ref)
        opened = self._open
        if opened and len(opened[-1][1]) < self.segment_ids:
            segment, entries = opened[-1]
            number = (self._next_number - 1) & NUMBER_MASK
        else:
            segment, entries, number = self._open_segment()
        slots[i] = (tag << TAG_SHIFT | dist << DIST_SHIFT | number << POS_BITS
                    | len(segment.hashes)) + 1
        segment.hashes.append(h)
        segment.refs.append(ref)
        entries.append((event_id, ref))
        self._used += 1
        self._total += 1
        return ref

    def origin_ref(self, origin: str) -> int | None:
        """The re-keyed record that first carried this origin, or None."""
        return self._origins.get(origin)

    def add(self, event_id: str, ref: int, origin: str | None = None) -> None:
        """Remember a counted event that `first_seen` did not find (and, when re-keyed,
        its origin)."""
        if self._used >= self._grow_at:
            self._grow(self._used + 1)
        segment, entries, number = self._open_segment()
        h = hash(event_id)
        if self._insert(h, number << POS_BITS | len(segment.hashes)) is False:
            self._grow(self._used + 1, force=True)
            self._insert(h, number << POS_BITS | len(segment.hashes))
        segment.hashes.append(h)
        segment.refs.append(ref)
        if origin is None:
            entries.append((event_id, ref))
        else:
            self._origins[origin] = ref
            segment.origins.append((origin, ref))
            entries.append((event_id, ref, origin))
        self._total += 1

    def add_origin(self, origin: str, ref: int) -> None:
        """Remember the origin of a re-keyed message that was dead-lettered."""
        segment, entries, _ = self._open_segment()
        self._origins[origin] = ref
        segment.origins.append((origin, ref))
        entries.append(("", ref, origin))

    def _open_segment(self) -> tuple[Segment, list[Entry], int]:
        """The segment new ids go to, its entries and its number (a new one when full)."""
        if self._open:
            segment, entries = self._open[-1]
            if len(entries) < self.segment_ids:
                return segment, entries, self._next_number - 1 & NUMBER_MASK
        segment, entries = Segment(-1, 0, 0), []
        self._open.append((segment, entries))
        number = self._next_number & NUMBER_MASK
        self._next_number += 1
        self._numbered[number] = segment
        return segment, entries, number

    def seal(self, seq: int, wall_ms: int) -> list[Sealed]:
        """Close the ids added since the last seal into segments (at least one: the
        newest carries the partition's progress)."""
        opened, self._open = self._open, []
        if not opened:
            opened = [(Segment(-1, 0, 0), [])]
            number = -1
        else:
            number = (self._next_number - len(opened)) & NUMBER_MASK
        end_total = self._total - sum(len(segment) for segment, _ in opened)
        sealed: list[Sealed] = []
        for segment, entries in opened:
            end_total += len(segment)
            segment.seq, segment.wall_ms, segment.end_total = seq + len(sealed), wall_ms, end_total
            # exact-size copies: a filled array keeps up to an eighth more room (1 B per id)
            segment.hashes, segment.refs = segment.hashes[:], segment.refs[:]
            self._segments.append(segment)
            self._numbers.append(number)
            if number >= 0:
                number = (number + 1) & NUMBER_MASK
            sealed.append(Sealed(segment, entries))
        return sealed

    def expire(self, now_ms: int) -> list[int]:
        """Drop segments old enough by both measures (or over the cap); their seqs.

        Segments the cap drops before they are old enough are a cut: `take_cut` tells.
        """
        dropped = []
        cut = 0
        aged = False
        segments = self._segments
        while len(segments) > 1:
            oldest = segments[0]
            newer = self._total - oldest.end_total
            old_enough = newer >= self.min_events and now_ms - oldest.wall_ms >= self.min_age_ms
            if not (old_enough or len(self) > self.max_ids):
                break
            if not old_enough:
                cut += len(oldest)
            aged = aged or old_enough
            self._drop_oldest()
            dropped.append(oldest.seq)
        window_ms = now_ms - segments[0].wall_ms if segments else 0
        if cut:
            before = self._cut
            self._cut = DedupCut(cut + (before.ids if before else 0),
                                 not self._cutting or bool(before and before.new_episode),
                                 window_ms)
            self._cutting = True
        elif aged:
            self._cutting = False  # ids lived their whole window again: the episode is over
        return dropped

    def take_cut(self) -> DedupCut | None:
        """The ids cut since the last call, if any (tests/test_dedup.py)."""
        cut, self._cut = self._cut, None
        return cut

    def restore(self, segments: Iterable[Segment]) -> None:
        """Rebuild from the segments kept in the changelog (any order)."""
        for segment in sorted(segments, key=lambda s: s.seq):
            self._append(segment)
            for origin, ref in segment.origins:
                self._origins.setdefault(origin, ref)
            self._total = max(self._total, segment.end_total)

    # The open-addressing table: hash -> (segment, position).

    def _find(self, h: int) -> int | None:
        """The ref of the indexed id of hash h, or None."""
        slots = self._slots
        n_slots = len(slots)
        tag = (h >> HASH_TO_TAG) & TAG_MASK
        i = h % n_slots
        v = slots[i]
        while v:
            v -= 1
            if v >> TAG_SHIFT == tag:
                segment = self._numbered[(v >> POS_BITS) & NUMBER_MASK]
                if segment.hashes[v & POS_MASK] == h:
                    return segment.refs[v & POS_MASK]
            i += 1
            if i == n_slots:
                i = 0
            v = slots[i]
        return None

    def _append(self, segment: Segment) -> None:
        """Hold a restored segment and index its ids (one indexed already keeps its
        first ref, like setdefault)."""
        self._segments.append(segment)
        if not len(segment):
            self._numbers.append(-1)
            return  # numbers go to segments with ids only: few enough to stay distinct
        number = self._next_number & NUMBER_MASK
        self._next_number += 1
        self._numbered[number] = segment
        self._numbers.append(number)
        if self._used + len(segment) >= self._grow_at:
            self._grow(self._used + len(segment))
        for pos, h in enumerate(segment.hashes):
            if self._insert(h, number << POS_BITS | pos) is False:
                self._grow(self._used + 1, force=True)
                self._insert(h, number << POS_BITS | pos)

    def _insert(self, h: int, where: int) -> bool | None:
        """Index hash h at `where` (number and position): True, or None when it is
        indexed already, False when its probe would run longer than DIST_MASK slots."""
        slots = self._slots
        n_slots = len(slots)
        numbered = self._numbered
        tag = (h >> HASH_TO_TAG) & TAG_MASK
        i = h % n_slots
        dist = 0
        while True:
            v = slots[i]
            if not v:
                if dist > DIST_MASK:
                    return False
                slots[i] = (tag << TAG_SHIFT | dist << DIST_SHIFT | where) + 1
                self._used += 1
                return True
            v -= 1
            if (v >> TAG_SHIFT == tag and numbered[(v >> POS_BITS) & NUMBER_MASK]
                    .hashes[v & POS_MASK] == h):
                return None
            i += 1
            dist += 1
            if i == n_slots:
                i = 0

    def _drop_oldest(self) -> None:
        """Forget the oldest segment's ids: those the table has from it (or with its ref)."""
        segment = self._segments.popleft()
        number = self._numbers.popleft()
        for origin, ref in segment.origins:
            if self._origins.get(origin) == ref:
                del self._origins[origin]
        if number < 0:
            return
        slots = self._slots
        n_slots = len(slots)
        numbered = self._numbered
        for h, ref in zip(segment.hashes, segment.refs, strict=True):
            tag = (h >> HASH_TO_TAG) & TAG_MASK
            i = h % n_slots
            while True:
                v = slots[i]
                if not v:
                    break
                w = v - 1
                if w >> TAG_SHIFT == tag:
                    owner = (w >> POS_BITS) & NUMBER_MASK
                    pos = w & POS_MASK
                    if numbered[owner].hashes[pos] == h:
                        if owner == number or numbered[owner].refs[pos] == ref:
                            # empty slot i; shift back the entries after it that may move
                            gap = 0
                            j = i
                            while True:
                                j += 1
                                if j == n_slots:
                                    j = 0
                                gap += 1
                                v = slots[j]
                                if not v:
                                    break
                                if ((v - 1) >> DIST_SHIFT) & DIST_MASK >= gap:
                                    slots[i] = v - (gap << DIST_SHIFT)
                                    i = j
                                    gap = 0
                            slots[i] = 0
                            self._used -= 1
                        break
                i += 1
                if i == n_slots:
                    i = 0
        del numbered[number]

    def _grow(self, needed: int, force: bool = False) -> None:
        """A table twice as large, no larger than the cap asks (0.6 full when the window
        is cut short, 0.75 until `expire`: bench/dedup_size.py), refilled."""
        old = self._slots
        capped = int(self.max_ids / MAX_LOAD) + 1
        if not force and len(old) >= capped and needed <= FULL_LOAD * len(old):
            self._grow_at = int(FULL_LOAD * len(old))
            return  # over the cap by a batch, until `expire`: no need to grow
        n_slots = max(int(needed / MAX_LOAD) + 1, min(len(old) * 2, capped))
        if n_slots <= len(old):
            n_slots = len(old) * 3 // 2
        numbered = self._numbered
        keep = (1 << DIST_SHIFT) - 1  # number and position; tag and distance are redone
        while True:
            slots = array("q", bytes(8 * n_slots))
            for v in old:
                if not v:
                    continue
                w = v - 1
                h = numbered[(w >> POS_BITS) & NUMBER_MASK].hashes[w & POS_MASK]
                i = h % n_slots
                dist = 0
                while slots[i]:
                    i += 1
                    dist += 1
                    if i == n_slots:
                        i = 0
                if dist > DIST_MASK:
                    break
                slots[i] = ((w >> TAG_SHIFT) << TAG_SHIFT | dist << DIST_SHIFT | w & keep) + 1
            else:
                break
            n_slots = n_slots * 3 // 2  # a probe too long: not in practice
        self._slots = slots
        self._grow_at = int((FULL_LOAD if n_slots >= capped else MAX_LOAD) * n_slots)
