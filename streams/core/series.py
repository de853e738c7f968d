"""Campaign time series of one partition: views, likes, uploads and distinct accounts per
minute over the last 24 hours (`1m`) and per hour over the last 30 days (`1h`), in event
time, as `rf:series:{campaign}:{step}` shows them (the partition's share of each bucket).

Exactness rests on the rules of streams/core/state.py, held by two kinds of record:

* views, likes and uploads live in *chunk* records of the partition-state changelog, an
  hour of minute buckets or a day of hour buckets each, each with its own `applied`
  offsets per source slot: an event at or below them is in the chunk already;
* distinct accounts are derived, never stored: an account-campaign's active minutes and
  hours are bitmaps in its account record (`AccountState.activity`), and the partition's
  count per bucket is kept by delta as bits flip from 0 to 1, and rebuilt from the
  bitmaps at restore (`SeriesBook.restore`).

Each record is idempotent on its own, so a crash between the two sends converges on
replay (tests/test_series.py::test_a_replay_after_any_lost_record_converges). Buckets
outside the span of the clock are not added to; a chunk is dropped (tombstoned, its
cells deleted from Redis) once all its buckets are outside it, so cells a little older
than the span may linger until then: readers keep the span (streams/api/reader.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from streams.core.dedup import Segment
from streams.core.ingest import FUTURE_TOLERANCE_MS
from streams.core.state import N_SLOTS, AccountState, PartitionProgress, decode_segment
from streams.core.windows import HOUR_MS, MINUTE_MS

#: the steps of a series, by index: minutes over 24 h, hours over 30 days
STEPS = ("1m", "1h")
STEP_INDEX = {name: i for i, name in enumerate(STEPS)}
UNITS = (MINUTE_MS, HOUR_MS)
#: buckets in each step's span: `bucket > unit(clock) - span`
SPANS = (1440, 720)
#: buckets per chunk record: an hour of minutes, a day of hours
CHUNK_BUCKETS = (60, 24)
#: bits of an account-campaign's activity per step: its span, and the buckets an event
#: may lie ahead of the clock (so no bit in the span shifts out while the clock trails)
ACTIVITY_BITS = (SPANS[0] + FUTURE_TOLERANCE_MS // MINUTE_MS + 1,
                 SPANS[1] + FUTURE_TOLERANCE_MS // HOUR_MS + 1)
_MASKS = tuple((1 << bits) - 1 for bits in ACTIVITY_BITS)
#: the first element of a chunk record's body (a segment's is its format number)
CHUNK_MARK = "series"


def first_kept(clock_ms: int) -> tuple[int, int]:
    """Per step, the oldest bucket inside the span of the clock."""
    return (clock_ms // MINUTE_MS - SPANS[0] + 1, clock_ms // HOUR_MS - SPANS[1] + 1)


def mark_active(activity: list[int], step: int, bucket: int) -> bool:
    """Set the bit of `bucket` in an account-campaign's activity
    `[newest minute, minute bits, newest hour, hour bits]` (bit i: `newest - i`); True
    when it flipped from 0 to 1. Buckets older than the bits reach are not kept."""
    at = 2 * step
    newest, bits = activity[at], activity[at + 1]
    if bucket > newest:
        shift = bucket - newest
        bits = 1 if shift >= ACTIVITY_BITS[step] else ((bits << shift) & _MASKS[step]) | 1
        activity[at], activity[at + 1] = bucket, bits
        return True
    age = newest - bucket
    if age >= ACTIVITY_BITS[step] or bits >> age & 1:
        return False
    activity[at + 1] = bits | 1 << age
    return True


def active_buckets(activity: list[int], step: int) -> Iterator[int]:
    """The buckets whose bit is set, of one step."""
    newest, bits = activity[2 * step], activity[2 * step + 1]
    while bits:
        low = bits & -bits
        yield newest - (low.bit_length() - 1)
        bits ^= low


def new_activity() -> list[int]:
    return [-1, 0, -1, 0]


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A decoded chunk record: the partition's views, likes and uploads of one campaign
    in one chunk of buckets, and the offsets already in it."""

    partition: int
    campaign: str
    step: int
    start: int
    cells: dict[int, list[int]]
    applied: list[int]
    #: the owner epoch it was built in (streams/core/state.py)
    epoch: int = 0


def chunk_key(partition: int, campaign: str, step: int, start: int) -> str:
    """`{partition}:series:{campaign}:{step}:{first bucket}` (a segment's key is
    `{partition}:{seq}`, digits only)."""
    return f"{partition}:series:{campaign}:{STEPS[step]}:{start}"


def encode_chunk(record: ChunkRecord) -> bytes:
    return b"%d|" % record.partition + orjson.dumps([
        CHUNK_MARK, record.campaign, STEPS[record.step], record.start,
        [[b, *c] for b, c in record.cells.items()], record.applied, record.epoch])


def decode_partition_record(
        data: bytes) -> ChunkRecord | tuple[int, Segment, PartitionProgress | None]:
    """A partition-state record: a chunk, or a dedup segment with its progress."""
    partition_text, _, body = data.partition(b"|")
    if not body.startswith(b'["%s"' % CHUNK_MARK.encode()):
        return decode_segment(data)
    _mark, campaign, step, start, cells, applied, *epoch = orjson.loads(body)
    return ChunkRecord(int(partition_text), campaign, STEP_INDEX[step], start,
                       {c[0]: c[1:] for c in cells}, applied, epoch[0] if epoch else 0)


def chunk_supersedes(current: bytes, incoming: bytes) -> bool:
    """Does the newer-offset partition-state record `incoming` replace `current`, of the
    same key? Yes, unless both are chunks and an older owner built it (`rankflow
    rebuild`; state.supersedes for accounts)."""
    now, then = decode_partition_record(current), decode_partition_record(incoming)
    return not (isinstance(now, ChunkRecord) and isinstance(then, ChunkRecord)
                and then.epoch < now.epoch)


@dataclass(slots=True)
class Chunk:
    """One chunk of a campaign's buckets in memory: the views, likes and uploads (its
    record's), and the distinct accounts (derived)."""

    campaign: str
    step: int
    start: int
    cells: dict[int, list[int]] = field(default_factory=dict)
    accounts: dict[int, int] = field(default_factory=dict)
    applied: list[int] = field(default_factory=lambda: [-1] * N_SLOTS)
    #: has a record in the changelog (dropping it writes a tombstone)
    written: bool = False

    def buckets(self) -> set[int]:
        return self.cells.keys() | self.accounts.keys()

    def value(self, bucket: int) -> str | None:
        """The Redis cell `views,likes,uploads,accounts`, or None when the bucket is empty."""
        cell = self.cells.get(bucket)
        accounts = self.accounts.get(bucket, 0)
        if cell is None and not accounts:
            return None
        views, likes, uploads = cell or (0, 0, 0)
        return f"{views},{likes},{uploads},{accounts}"


#: (campaign, step name, bucket start ms, `views,likes,uploads,accounts` or None: delete)
Cell = tuple[str, str, int, str | None]


@dataclass(slots=True)
class SeriesChanges:
    """What a batch changed in a partition's series: chunk records (None: tombstone) and
    Redis cells."""

    records: list[tuple[str, ChunkRecord | None]] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)


class SeriesBook:
    """A partition's series: its chunks, and a batch's additions until `finish`.

    A batch: `begin(clock)`, then `saw` for each source slot's records, `add` (events
    new to every chunk: above `high`), `add_replayed` (each chunk decides by its own
    `applied`), `account_active` (a bit flipped), then `finish`.
    """

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.chunks: dict[tuple[str, int, int], Chunk] = {}
        #: per slot, the highest offset any chunk holds: an event above it is new to all
        self.high = [-1] * N_SLOTS
        self._first = (0, 0)
        self._last = [-1] * N_SLOTS
        self._grown: set[tuple[str, int, int]] = set()
        self._touched: set[tuple[str, int, int]] = set()
        self._dropped: list[Chunk] = []

    def begin(self, clock_ms: int) -> None:
        """Start a batch at this clock: chunks wholly outside the span are dropped."""
        self._first = first = first_kept(clock_ms)
        old = [key for key, chunk in self.chunks.items()
               if chunk.start + CHUNK_BUCKETS[chunk.step] <= first[chunk.step]]
        for key in old:
            self._dropped.append(self.chunks.pop(key))

    def saw(self, slot: int, offset: int) -> None:
        """The batch holds this slot's records up to `offset`."""
        if offset > self._last[slot]:
            self._last[slot] = offset

    def _chunk(self, campaign: str, step: int, bucket: int) -> Chunk:
        start = bucket - bucket % CHUNK_BUCKETS[step]
        key = (campaign, step, start)
        chunk = self.chunks.get(key)
        if chunk is None:
            chunk = self.chunks[key] = Chunk(campaign, step, start)
        return chunk

    def _add_cell(self, chunk: Chunk, bucket: int, metric: int, count: int) -> None:
        cell = chunk.cells.get(bucket)
        if cell is None:
            cell = chunk.cells[bucket] = [0, 0, 0]
        cell[metric] += count
        key = (chunk.campaign, chunk.step, chunk.start)
        self._grown.add(key)
        self._touched.add(key)

    def add(self, campaign: str, metric: int, count: int, minute: int | None,
            hour: int) -> None:
        """Events new to every chunk (`metric`: VIEWS, LIKES or UPLOADS), in this minute
        (None: only their hour is known, they are older than the minutes' span)."""
        first = self._first
        if minute is not None and minute >= first[0]:
            self._add_cell(self._chunk(campaign, 0, minute), minute, metric, count)
        if hour >= first[1]:
            self._add_cell(self._chunk(campaign, 1, hour), hour, metric, count)

    def add_replayed(self, campaign: str, metric: int, count: int, ts: int, slot: int,
                     offset: int) -> None:
        """An event some chunk may hold already: each adds it if above its `applied`."""
        first = self._first
        for step in (0, 1):
            bucket = ts // UNITS[step]
            if bucket >= first[step]:
                chunk = self._chunk(campaign, step, bucket)
                if offset > chunk.applied[slot]:
                    self._add_cell(chunk, bucket, metric, count)

    def account_active(self, campaign: str, step: int, bucket: int) -> None:
        """One more distinct account in this bucket (its activity bit flipped)."""
        if bucket >= self._first[step]:
            chunk = self._chunk(campaign, step, bucket)
            chunk.accounts[bucket] = chunk.accounts.get(bucket, 0) + 1
            self._touched.add((campaign, step, chunk.start))

    def finish(self) -> SeriesChanges:
        """The batch's chunk records and Redis cells; a grown chunk now holds every
        offset the batch saw (each event of them for it was added or held already)."""
        changes = SeriesChanges()
        last, high = self._last, self.high
        for key in self._grown:
            chunk = self.chunks.get(key)
            if chunk is None:
                continue
            applied = chunk.applied
            for slot, offset in enumerate(last):
                if offset > applied[slot]:
                    applied[slot] = offset
                if offset > high[slot]:
                    high[slot] = offset
            chunk.written = True
            changes.records.append(self._record(chunk))
        for key in self._touched:
            chunk = self.chunks.get(key)
            if chunk is not None:
                changes.cells += self._cells(chunk)
        for chunk in self._dropped:
            if chunk.written:
                changes.records.append(
                    (chunk_key(self.partition, chunk.campaign, chunk.step, chunk.start), None))
            unit = UNITS[chunk.step]
            changes.cells += [(chunk.campaign, STEPS[chunk.step], b * unit, None)
                              for b in sorted(chunk.buckets())]
        self._grown, self._touched, self._dropped = set(), set(), []
        self._last = [-1] * N_SLOTS
        return changes

    def _record(self, chunk: Chunk) -> tuple[str, ChunkRecord]:
        return (chunk_key(self.partition, chunk.campaign, chunk.step, chunk.start),
                ChunkRecord(self.partition, chunk.campaign, chunk.step, chunk.start,
                            {b: list(c) for b, c in chunk.cells.items()},
                            list(chunk.applied)))

    @staticmethod
    def _cells(chunk: Chunk) -> list[Cell]:
        step, unit = STEPS[chunk.step], UNITS[chunk.step]
        return [(chunk.campaign, step, b * unit, chunk.value(b)) for b in sorted(chunk.buckets())]

    def all_cells(self) -> list[Cell]:
        """Every cell of the partition (a rewrite of its whole layout)."""
        return [cell for chunk in self.chunks.values() for cell in self._cells(chunk)]

    @classmethod
    def restore(cls, partition: int, records: Iterable[ChunkRecord],
                accounts: Iterable[AccountState], clock_ms: int) -> SeriesBook:
        """The book from its chunk records and its accounts' activity bitmaps."""
        book = cls(partition)
        for record in records:
            book.chunks[record.campaign, record.step, record.start] = Chunk(
                record.campaign, record.step, record.start,
                {b: list(c) for b, c in record.cells.items()}, {}, list(record.applied), True)
            book.high = [max(h, a) for h, a in zip(book.high, record.applied, strict=True)]
        first = first_kept(clock_ms)
        for state in accounts:
            for campaign, activity in state.activity.items():
                for step in (0, 1):
                    for bucket in active_buckets(activity, step):
                        if bucket >= first[step]:
                            chunk = book._chunk(campaign, step, bucket)
                            chunk.accounts[bucket] = chunk.accounts.get(bucket, 0) + 1
        return book
